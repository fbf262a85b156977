"""A release recipe: one JSON file that names every config of a published dataset.

`ncagen build --recipe dataset_cards/nca-trajectories/recipe.json --out DIR` builds exactly
the release it describes; the recipe's values take the place of the content flags (bands,
states, amounts, seed, shard size, every spec knob), so the release is one command that reads
the same wherever it runs. A recipe lists alphabets, each with its own bands; the build plans
just those (states, band) partitions, into one directory with one manifest.

    {
      "version": "1.0",                      the release (publish it with --tag v1.0)
      "description": "...",                  free text, for the reader
      "seed": 0,
      "rows": 160000,   or "tokens": "164M"  train rows (or tokens) per config
      "val_rows": 4096, or "val_fraction"    validation rows per config (rules disjoint)
      "shard_rows": "auto",                  or an integer
      "nca": {"seq_len": 1024, ...},         spec knobs; the defaults where absent
      "alphabets": [{"states": 10, "bands": ["0.2-0.3", "0.5-1.0"],
                     "mixes": ["0.3-0.4:1,0.5-1.0:1"]}, ...]   (mixes optional, as --mix)
    }

Every problem (unreadable JSON, an unknown key, a bad value) is a ConfigError naming the key.
"""

from __future__ import annotations

import json
import pathlib

from .config import Band, ConfigError, Mix, NCAConfig

KEYS = ("version", "description", "seed", "rows", "tokens", "val_rows", "val_fraction",
        "shard_rows", "nca", "alphabets")
NCA_KEYS = ("grid", "patch", "seq_len", "burn_in", "dt", "temperature", "identity_bias",
            "sims_per_rule", "conv_channels", "hidden")  # the knobs the build has flags for
ALPHABET_KEYS = ("states", "bands", "mixes")
# build flags that say where and how a build runs, not what it holds: allowed beside --recipe
RUN_FLAGS = ("recipe", "out", "executor", "address", "device", "workers", "batch", "overwrite",
             "shared_fs")


MAX_RECIPE_BYTES = 1 << 20  # a recipe is a page of JSON; anything larger is another file


def load_recipe(path: str) -> dict:
    """The recipe at `path` as BuildConfig keywords (all but where and how it runs)."""
    try:
        file = pathlib.Path(path)
        if file.exists():  # a missing one is the OSError below
            if not file.is_file():  # a directory, a device (/dev/zero), a pipe
                raise ConfigError(f"recipe {path}: not a regular file")
            if (size := file.stat().st_size) > MAX_RECIPE_BYTES:
                raise ConfigError(f"recipe {path}: {size:,} bytes, more than a recipe "
                                  f"({MAX_RECIPE_BYTES:,} at most)")
        raw = json.loads(file.read_text())
    except OSError as e:
        raise ConfigError(f"recipe {path}: cannot read it ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"recipe {path}: not JSON ({e.msg}, line {e.lineno})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"recipe {path}: not JSON (not UTF-8 text)") from None
    except RecursionError:
        raise ConfigError(f"recipe {path}: not a recipe (nested too deep to read)") from None
    from .plan import BuildConfig

    try:
        config = recipe_config(raw)
        BuildConfig(**config, out=".", executor="local")  # the content's checks, named here
    except ConfigError as e:
        raise ConfigError(f"recipe {path}: {e}") from None
    return config


def recipe_config(raw) -> dict:
    """A parsed recipe -> BuildConfig keywords; ConfigError for anything off."""
    from .cli import parse_amount

    _known(raw, KEYS, "the recipe")
    for key in ("version", "alphabets"):
        if key not in raw:
            raise ConfigError(f"{key!r} is missing")
    if not isinstance(raw["version"], str) or not raw["version"].strip():
        raise ConfigError(f"'version' must be a non-empty string, got {raw['version']!r}")
    if ("rows" in raw) == ("tokens" in raw):
        raise ConfigError("give the amount per config as exactly one of 'rows' or 'tokens'")
    if "val_rows" in raw and "val_fraction" in raw:
        raise ConfigError("give at most one of 'val_rows' and 'val_fraction'")
    amount = {k: parse_amount(_amount(raw, k), minimum=0 if k == "val_rows" else 1)
              for k in ("rows", "tokens", "val_rows") if k in raw}
    shard_rows = raw.get("shard_rows", "auto")
    if shard_rows != "auto":
        shard_rows = parse_amount(_amount(raw, "shard_rows"))
    nca = raw.get("nca", {})
    _known(nca, NCA_KEYS, "'nca'")
    for key, value in nca.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"nca.{key} must be a number, got {value!r}")
    pairs = _alphabets(raw["alphabets"])
    states = tuple(dict.fromkeys(n for n, _ in pairs))
    bands = tuple(dict.fromkeys(b for _, b in pairs if isinstance(b, Band)))
    mixes = tuple(dict.fromkeys(b for _, b in pairs if isinstance(b, Mix)))
    return dict(
        bands=bands, mixes=mixes, states=states, pairs=pairs, seed=_integer(raw, "seed", 0),
        rows=amount.get("rows"), tokens=amount.get("tokens"), val_rows=amount.get("val_rows"),
        val_fraction=_fraction(raw), shard_rows=shard_rows, release=raw["version"].strip(),
        nca=NCAConfig(**{**nca, "states": states[0]}))


def _known(table, keys: tuple, where: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(table).__name__}")
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {where} (known: {', '.join(keys)})")


def _amount(raw: dict, key: str) -> str:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{key!r} must be an integer or a string like '160K', got {value!r}")
    return str(value)


def _integer(raw: dict, key: str, default: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key!r} must be an integer, got {value!r}")
    return value


def _fraction(raw: dict) -> float:
    value = raw.get("val_fraction", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"'val_fraction' must be a number, got {value!r}")
    return float(value)


def _alphabets(alphabets) -> tuple:
    """The recipe's alphabets -> (states, Band or Mix) pairs, in the recipe's order (an
    alphabet's bands, then its mixtures)."""
    if not isinstance(alphabets, list) or not alphabets:
        raise ConfigError("'alphabets' must be a non-empty list of {states, bands} objects")
    pairs = []
    for i, entry in enumerate(alphabets):
        where = f"alphabets[{i}]"
        _known(entry, ALPHABET_KEYS, where)
        n, bands = entry.get("states"), entry.get("bands", [] if "mixes" in entry else None)
        if isinstance(n, bool) or not isinstance(n, int):
            raise ConfigError(f"{where}.states must be an integer, got {n!r}")
        if any(m == n for m, _ in pairs):
            raise ConfigError(f"{where}: states {n} is listed twice")
        mixes = entry.get("mixes", [])
        if not isinstance(bands, list) or not all(isinstance(b, str) for b in bands) or not (
                bands or mixes):
            raise ConfigError(f"{where}.bands must be a list of 'LO-HI' strings (non-empty "
                              f"unless there are mixes)")
        if not isinstance(mixes, list) or not all(isinstance(m, str) for m in mixes):
            raise ConfigError(f"{where}.mixes must be a list of 'LO-HI:W,LO-HI:W' strings")
        parsed = [Band.parse(b) for b in bands]
        if len(set(parsed)) != len(parsed):
            raise ConfigError(f"{where}: a band is repeated")
        parsed += [Mix.parse(m) for m in mixes]
        if len(set(parsed)) != len(parsed):
            raise ConfigError(f"{where}: a mixture is repeated")
        pairs.extend((n, b) for b in parsed)
    return tuple(pairs)


def release_tag(release: str) -> str:
    """The tag a release is published under (`publish --tag`), as its card names it: v<version>."""
    return release if release.startswith("v") else f"v{release}"
