"""The dataset card of a build: README.md with the Hub's YAML metadata, text and figures.

Every number in the card is recomputed from the Parquet files (rows, tokens, bytes, gzip-ratio
quantiles, token frequencies) and cross-checked against the manifest `ncagen.json`; a mismatch
is an error, never a silently wrong card. The build's own card (`quick`) takes the token
frequencies from the counts its workers wrote into each shard's footer and reads only the small
columns and one row group of each size, instead of every token again. The text is a template beside this module
(templates/dataset_card.md, templates/config_section.md) filled by pure functions of the scanned
statistics; figures (sample trajectories, gzip-ratio histogram, token rank-frequency plot) are
rendered from the data into DIR/figures/ and linked relatively.

    python -m ncagen.card DIR [--repo ORG/NAME] [--no-figures] [--quick]
"""

from __future__ import annotations

import io
import posixpath
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .config import Band, NCAConfig

README = "README.md"
FIGURES = "figures"
TEMPLATES = Path(__file__).resolve().parent / "templates"
DEFAULT_REPO = "<org>/nca-trajectories"
DEFAULT_CONFIG = "band_50_100"
SPLITS = ("train", "validation")
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
SAMPLE_ROWS = 3  # trajectories shown in a config's sample strip
STRIP_GRIDS = 12  # grids of each shown trajectory
SCAN_BATCH = 8192  # rows read at a time (the shards' row-group size); num_bytes is summed per
#                    batch (list offsets included), so another size would change the card's YAML
COUNT_CHUNK = 1 << 18  # token ids counted at a time
# Fixed axes margins (fractions of the 500 x 280 px plots), wide enough for 6-digit histogram
# counts and log-axis labels like 3x10^-2; tight_layout would fit them exactly but costs a whole
# extra layout pass per plot.
PLOT_MARGINS = {"left": 0.205, "right": 0.955, "bottom": 0.22, "top": 0.875}
ZIPF_RANKS = 1000  # the rank-frequency slope is fitted over this many top ranks
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                   (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"),
                   (1_000_000_000, "100M<n<1B"), (10_000_000_000, "1B<n<10B"))
TAGS = ("synthetic", "cellular-automata", "neural-cellular-automata", "pre-pre-training",
        "complexity", "ncagen")
PARAMETERS = {  # manifest key -> what it means, in the order the card lists them
    "states": "alphabet sizes n (cell states)",
    "bands": "gzip-ratio bands LO-HI (LO < ratio < HI)",
    "grid": "grid side (cells); the grid is a torus",
    "patch": "patch side; one p x p patch is one token",
    "seq_len": "tokens per row",
    "burn_in": "steps run and discarded before the first recorded grid",
    "dt": "steps between recorded grids",
    "temperature": "temperature tau of the update",
    "identity_bias": "bias b added to the logit of the current state",
    "sims_per_rule": "trajectories drawn from each rule",
    "conv_channels": "output channels of the 3x3 convolution",
    "hidden": "width of the hidden 1x1 layer",
    "ratio_grids": "first recorded grids the gzip ratio is measured on",
    "gzip_level": "gzip compression level of the ratio",
    "zstd_level": "zstd level of the reference zstd_ratio column",
    "train_rows": "train rows per config",
    "validation_rows": "validation rows per config",
    "shard_rows": "rows per Parquet file",
    "seed": "build seed (every rule seed derives from it)",
}


class CardError(ValueError):
    """The build directory cannot be described: missing, incomplete or inconsistent."""


@dataclass
class SplitStats:
    """One split of one config, as found in its Parquet files."""

    rows: int = 0
    tokens: int = 0
    num_bytes: int = 0  # Arrow (in-memory) size, what `datasets` reports as num_bytes
    download_bytes: int = 0  # size of the Parquet files
    files: list = field(default_factory=list)


@dataclass
class PartitionStats:
    """One config (band x alphabet), recomputed from its Parquet files."""

    name: str
    band: Band
    nca: NCAConfig
    splits: dict  # split -> SplitStats
    ratios: np.ndarray  # (rows,) float32, gzip ratio of every row, train then validation
    token_counts: np.ndarray  # (vocab_size,) int64, occurrences of every token id
    samples: list  # input_ids (seq_len,) of the first train rows
    candidates: int  # summed from the shards' embedded generation stats
    accepted: int

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.splits.values())

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.splits.values())

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / max(self.candidates, 1)


# scanning ----------------------------------------------------------------------------------
def load_manifest(out_dir: str) -> dict:
    """The manifest of a finished build, or CardError saying why there is none to describe."""
    from pyarrow import fs

    from .shards import MANIFEST, read_manifest
    from .storage import filesystem

    fsys, base = filesystem(out_dir)
    if fsys.get_file_info(base).type != fs.FileType.Directory:
        raise CardError(f"{out_dir} is not a directory")
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise CardError(f"{out_dir} holds no ncagen build ({MANIFEST} is missing)")
    if not manifest.get("complete") or not manifest.get("partitions"):
        raise CardError(f"the build in {out_dir} is not complete; rerun its build command first")
    return manifest


def partition_config(manifest: dict, states: int) -> NCAConfig:
    """The generation config of one alphabet of a build."""
    return NCAConfig(**manifest["config"]["nca"], states=states)


def parquet_files(out_dir: str) -> list[str]:
    """Paths (relative to the build) of every finished Parquet file under data/."""
    from pyarrow import fs

    from .storage import filesystem

    fsys, base = filesystem(out_dir)
    data = posixpath.join(base, "data")
    if fsys.get_file_info(data).type != fs.FileType.Directory:
        return []
    infos = fsys.get_file_info(fs.FileSelector(data, recursive=True))
    return sorted(posixpath.relpath(i.path, base) for i in infos
                  if i.type == fs.FileType.File and i.path.endswith(".parquet"))


def scan_partition(out_dir: str, name: str, band: Band, nca: NCAConfig, files: dict,
                   quick: bool = False) -> PartitionStats:
    """Read one config's Parquet files ({split: [relpath]}) and compute its statistics.

    `quick` takes each shard's token counts from the footer the build's worker wrote and reads
    only the small columns and one row group of each size (all groups of a config have the same
    layout, so the same Arrow size); a file without counts in its footer is read in full.
    The statistics are the same either way (tests/test_card.py compares the two cards).
    """
    import json

    import pyarrow.parquet as pq

    from .shards import STATS_KEY, schema, unpack_counts
    from .storage import filesystem

    fsys, base = filesystem(out_dir)
    expected = schema(nca)
    splits, ratios, samples = {}, [], []
    counts = np.zeros(nca.vocab_size, np.int64)
    group_bytes: dict[int, int] = {}  # rows of a row group -> its Arrow size
    candidates = accepted = 0

    def take(batch, rel: str, split: str, count_tokens: bool) -> int:
        """Check one batch (a row group) and add what it holds, but its rows and ratios;
        returns its token count."""
        import pyarrow.compute as pc

        ids = batch.column("input_ids")
        lengths = pc.min_max(pc.list_value_length(ids)).as_py()  # nulls skipped
        if lengths["min"] is not None and not (lengths["min"] == lengths["max"] == nca.seq_len):
            raise CardError(f"{rel} has rows that are not {nca.seq_len} tokens long")
        values = _numpy(ids.flatten(), np.int32, rel, "input_ids")  # (rows * seq_len,)
        if count_tokens:
            _add_token_counts(values, counts, rel)
        elif values.size and (values.min() < 0 or values.max() >= counts.size):
            raise CardError(f"{rel} has token ids outside the vocabulary")
        for col, want in (("states", nca.states), ("band", name)):
            if any(v is not None and v != want for v in batch.column(col).unique().to_pylist()):
                raise CardError(f"{rel} has rows whose {col} is not {want}")
        if split == "train" and len(samples) < SAMPLE_ROWS:
            samples.extend(np.asarray(r, np.int32)
                           for r in ids.slice(0, SAMPLE_ROWS - len(samples)).to_pylist())
        group_bytes.setdefault(batch.num_rows, batch.nbytes)
        return values.size

    for split, paths in files.items():
        st = splits[split] = SplitStats(files=list(paths))
        for rel in paths:
            with fsys.open_input_file(posixpath.join(base, rel)) as f:
                pf = pq.ParquetFile(f)
                st.download_bytes += f.size()
                if not pf.schema_arrow.equals(expected):
                    raise CardError(f"{rel} does not have the ncagen schema")
                extra = json.loads((pf.metadata.metadata or {}).get(STATS_KEY, b"{}"))
                candidates += int(extra.get("candidates", 0))
                accepted += int(extra.get("accepted", 0))
                groups = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
                if quick and "token_counts" in extra and all(g == SCAN_BATCH for g in groups[:-1]):
                    try:
                        found = unpack_counts(extra["token_counts"], counts.size)
                    except ValueError as e:
                        raise CardError(f"{rel}: {e}") from None
                    if found.sum() != sum(groups) * nca.seq_len:
                        raise CardError(f"{rel}: its footer's token counts do not add up to its rows")
                    counts += found
                    for i, rows in enumerate(groups):  # one group of each size, for its layout
                        if rows not in group_bytes or (split == "train" and len(samples) < SAMPLE_ROWS):
                            take(pf.read_row_group(i).to_batches()[0], rel, split, False)
                        st.num_bytes += group_bytes[rows]
                    ratio = pf.read(columns=["gzip_ratio"]).column("gzip_ratio").combine_chunks()
                    ratios.append(_numpy(ratio, np.float32, rel, "gzip_ratio"))
                    st.rows += sum(groups)
                    st.tokens += int(found.sum())
                else:
                    for batch in pf.iter_batches(batch_size=SCAN_BATCH):
                        st.tokens += take(batch, rel, split, True)
                        ratios.append(_numpy(batch.column("gzip_ratio"), np.float32, rel,
                                             "gzip_ratio"))
                        st.num_bytes += batch.nbytes
                        st.rows += batch.num_rows
    all_ratios = np.concatenate(ratios) if ratios else np.zeros(0, np.float32)
    return PartitionStats(name, band, nca, splits, all_ratios, counts, samples, candidates,
                          accepted)


def _numpy(arr, dtype, rel: str, column: str) -> np.ndarray:
    """A zero-copy NumPy view of a primitive Arrow array (Array.to_numpy would import pandas)."""
    if arr.null_count:
        raise CardError(f"{rel} has null values in {column}")
    if not len(arr):
        return np.zeros(0, dtype)
    itemsize = np.dtype(dtype).itemsize
    return np.frombuffer(arr.buffers()[1], dtype, count=len(arr), offset=arr.offset * itemsize)


def _add_token_counts(values: np.ndarray, counts: np.ndarray, rel: str) -> None:
    """Add the occurrences of every token id to counts, refusing ids outside the vocabulary."""
    for start in range(0, values.size, COUNT_CHUNK):  # chunks keep bincount's int64 copy in cache
        chunk = values[start:start + COUNT_CHUNK]
        if chunk.min() < 0 or chunk.max() >= counts.size:
            raise CardError(f"{rel} has token ids outside the vocabulary")
        counts += np.bincount(chunk, minlength=counts.size)


def scan_build(out_dir: str, quick: bool = False) -> tuple[dict, list[PartitionStats]]:
    """The manifest and every config's statistics, cross-checked against each other (`quick`:
    token counts from the shards' footers, see scan_partition)."""
    manifest = load_manifest(out_dir)
    on_disk = parquet_files(out_dir)
    listed = set(manifest.get("shards", {}))
    if set(on_disk) != listed:
        extra, missing = sorted(set(on_disk) - listed), sorted(listed - set(on_disk))
        raise CardError(f"the Parquet files in {out_dir} do not match its manifest "
                        f"(not in the manifest: {extra[:3]}, missing: {missing[:3]})")
    parts = []
    for name, p in _ordered(manifest["partitions"]):
        nca = partition_config(manifest, int(p["states"]))
        files = {split: [f for f in on_disk if f.startswith(f"data/{name}/{split}-")]
                 for split in SPLITS if p["splits"].get(split, {}).get("shards")}
        part = scan_partition(out_dir, name, Band(float(p["lo"]), float(p["hi"])), nca, files,
                              quick)
        cross_check(part, p, manifest["shards"])
        parts.append(part)
    return manifest, parts


def _ordered(partitions: dict) -> list[tuple[str, dict]]:
    """Configs in a stable order: by alphabet, then band."""
    return sorted(partitions.items(), key=lambda kv: (kv[1]["states"], kv[1]["lo"], kv[1]["hi"]))


def cross_check(part: PartitionStats, entry: dict, shards: dict) -> None:
    """Raise CardError where the Parquet files and the manifest disagree."""
    from .complexity import gzip_ratio_of_row

    for split, st in part.splits.items():
        want = entry["splits"][split]
        listed_rows = sum(shards[f]["rows"] for f in st.files)
        for key, got in (("rows", st.rows), ("tokens", st.tokens)):
            if got != want[key]:
                raise CardError(f"{part.name}/{split}: the manifest says {want[key]:,} {key}, "
                                f"the Parquet files hold {got:,}")
        if listed_rows != st.rows or len(st.files) != want["shards"]:
            raise CardError(f"{part.name}/{split}: the manifest's shard list does not match "
                            f"the files")
    if (part.candidates, part.accepted) != (entry["candidates"], entry["accepted"]):
        raise CardError(f"{part.name}: the manifest's candidate counts differ from the shards' own")
    inside = part.band.mask(part.ratios)
    if not inside.all():
        raise CardError(f"{part.name}: {int((~inside).sum())} rows have a gzip ratio outside "
                        f"the band {part.band}")
    if part.ratios.size and part.samples:
        stored = part.ratios[0]  # the first train row's, since train is read first
        if gzip_ratio_of_row(part.samples[0], part.nca) != stored:
            raise CardError(f"{part.name}: the first row's gzip ratio does not match its tokens")


# pure rendering ------------------------------------------------------------------------------
def size_category(rows: int) -> str:
    """The Hub's size_categories label for a number of rows."""
    for limit, label in SIZE_CATEGORIES:
        if rows < limit:
            return label
    return "n>10B"


def default_config(parts: list[PartitionStats]) -> str:
    """band_50_100 when the build has it, else its first config."""
    names = [p.name for p in parts]
    return DEFAULT_CONFIG if DEFAULT_CONFIG in names else names[0]


def feature_yaml(nca: NCAConfig) -> list[dict]:
    """The shard schema as `datasets` features in the card's YAML."""
    import pyarrow as pa

    from .shards import schema

    out = []
    for f in schema(nca):
        if pa.types.is_list(f.type):
            out.append({"name": f.name, "sequence": _DTYPES[str(f.type.value_type)]})
        else:
            out.append({"name": f.name, "dtype": _DTYPES[str(f.type)]})
    return out


_DTYPES = {"int32": "int32", "int64": "int64", "float": "float32", "double": "float64",
           "string": "string"}  # Arrow type name -> datasets dtype name


def band_text(band: Band) -> str:
    """A band as LO-HI with at least one decimal on each edge: 0.5-1.0, 0.35-0.45."""
    return f"{_edge(band.lo)}-{_edge(band.hi)}"


def _edge(x: float) -> str:
    s = f"{x:g}"
    return s if "." in s else f"{s}.0"


def card_metadata(parts: list[PartitionStats]) -> dict:
    """The card's YAML header: license, tags, one config per partition and its dataset_info."""
    default = default_config(parts)
    configs, infos = [], []
    for p in parts:
        files = [{"split": s, "path": f"data/{p.name}/{s}-*.parquet"} for s in p.splits]
        config = {"config_name": p.name, "data_files": files}
        if p.name == default:
            config["default"] = True
        configs.append(config)
        infos.append({
            "config_name": p.name,
            "features": feature_yaml(p.nca),
            "splits": [{"name": s, "num_bytes": st.num_bytes, "num_examples": st.rows}
                       for s, st in p.splits.items()],
            "download_size": sum(st.download_bytes for st in p.splits.values()),
            "dataset_size": sum(st.num_bytes for st in p.splits.values()),
        })
    return {
        "license": "mit",
        "pretty_name": "NCA trajectories",
        "task_categories": ["text-generation"],
        "tags": list(TAGS),
        "size_categories": [size_category(sum(p.rows for p in parts))],
        "configs": configs,
        "dataset_info": infos,
    }


def ratio_quantiles(ratios: np.ndarray) -> dict:
    """min, the QUANTILES, max and mean of gzip ratios, as Python floats."""
    x = np.asarray(ratios, np.float64)
    if not x.size:
        return {}
    out = {"min": float(x.min())}
    out.update({f"{100 * q:g}%": float(v) for q, v in zip(QUANTILES, np.quantile(x, QUANTILES))})
    out.update(max=float(x.max()), mean=float(x.mean()))
    return out


def zipf_stats(counts: np.ndarray) -> dict:
    """Rank-frequency summary of token counts: tokens used, top token and share, fitted slope."""
    order = np.argsort(-counts, kind="stable")
    freq = counts[order]
    used = int((freq > 0).sum())
    total = int(freq.sum())
    k = min(used, ZIPF_RANKS)
    slope = float("nan")
    if k > 1:  # least squares in log-log space
        slope = float(np.polyfit(np.log(np.arange(1, k + 1)), np.log(freq[:k]), 1)[0])
    return {"used": used, "top_token": int(order[0]), "top_share": freq[0] / max(total, 1),
            "slope": slope}


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def configs_table(parts: list[PartitionStats]) -> str:
    """One line per config: band, alphabet, rows per split, tokens, acceptance, median ratio."""
    rows = [[f"`{p.name}`", band_text(p.band), p.nca.states,
             f"{p.splits['train'].rows:,}" if "train" in p.splits else 0,
             f"{p.splits['validation'].rows:,}" if "validation" in p.splits else 0,
             f"{p.tokens:,}", f"{p.acceptance_rate:.1%}",
             f"{ratio_quantiles(p.ratios).get('50%', float('nan')):.4f}"] for p in parts]
    return _table(["config", "gzip ratio band", "states", "train rows", "validation rows",
                   "tokens", "acceptance", "median gzip ratio"], rows)


def layout_table(parts: list[PartitionStats]) -> str:
    """Token ids and grid sizes per alphabet."""
    seen = {}
    for p in parts:
        seen.setdefault(p.nca.states, p.nca)
    rows = [[n, f"{c.vocab_size:,}", f"0..{c.grid_start - 1:,}", c.grid_start, c.grid_end,
             c.tokens_per_grid, c.seq_len // c.tokens_per_grid] for n, c in sorted(seen.items())]
    return _table(["states n", "vocabulary", "patch tokens", "GRID_START", "GRID_END",
                   "tokens per grid", "complete grids per row"], rows)


def parameters_table(manifest: dict) -> str:
    """Every generation parameter recorded in the manifest, with its meaning."""
    build = manifest["config"]
    cfg = {**build["nca"], **{k: v for k, v in build.items() if k != "nca"}}
    rows = []
    for key in [*PARAMETERS, *sorted(set(cfg) - set(PARAMETERS))]:
        if key in cfg:
            value = cfg[key]
            if key == "bands":
                value = [band_text(Band.parse(b)) for b in value]
            rows.append([f"`{key}`", _value_text(value), PARAMETERS.get(key, "")])
    rows.append(["`ncagen_version`", manifest.get("ncagen_version", "unknown"),
                 "generator version"])
    return _table(["parameter", "value", "meaning"], rows)


def _value_text(value) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def splits_table(part: PartitionStats) -> str:
    """Rows, tokens and files of each split of a config."""
    rows = [[s, f"{st.rows:,}", f"{st.tokens:,}", len(st.files), f"{st.download_bytes:,}"]
            for s, st in part.splits.items()]
    return _table(["split", "rows", "tokens", "Parquet files", "bytes on disk"], rows)


def quantiles_table(ratios: np.ndarray) -> str:
    """The gzip-ratio distribution of a config as a one-row table."""
    q = ratio_quantiles(ratios)
    return _table(list(q), [[f"{v:.4f}" for v in q.values()]]) if q else "(no rows)"


def figure_paths(name: str) -> dict[str, str]:
    """Relative paths of a config's figures."""
    return {kind: f"{FIGURES}/{name}_{kind}.png" for kind in ("samples", "gzip_ratio", "zipf")}


def figures_markdown(part: PartitionStats) -> str:
    """The config's figures with captions, as relative image links."""
    paths, z = figure_paths(part.name), zipf_stats(part.token_counts[:part.nca.grid_start])
    shown = min(STRIP_GRIDS, part.nca.seq_len // part.nca.tokens_per_grid)
    edges = f"{_edge(part.band.lo)} and {_edge(part.band.hi)}"
    ranks = min(z["used"], ZIPF_RANKS)
    figures = [
        (f"sample trajectories of {part.name}", paths["samples"],
         (f"The first {shown} grids of the first {len(part.samples)} train rows "
          f"(time runs left to right, one colour per state).")),
        (f"gzip-ratio histogram of {part.name}", paths["gzip_ratio"],
         f"gzip ratio of every row; the dashed lines are the band edges {edges}."),
        (f"token rank-frequency plot of {part.name}", paths["zipf"],
         (f"Patch-token frequency against rank, log-log (delimiters left out); the dotted line "
          f"is 1/rank. Fitted slope over the top {ranks:,} ranks: {z['slope']:.2f}.")),
    ]
    return "".join(f"![{alt}]({path})\n\n*{caption}*\n\n" for alt, path, caption in figures)


def config_section(part: PartitionStats, repo_id: str, figures: bool) -> str:
    """The card's section about one config."""
    z = zipf_stats(part.token_counts[:part.nca.grid_start])
    return _template("config_section.md").substitute(
        name=part.name, band=band_text(part.band), states=part.nca.states, rows=f"{part.rows:,}",
        tokens=f"{part.tokens:,}", acceptance=f"{part.acceptance_rate:.1%}",
        accepted=f"{part.accepted:,}", candidates=f"{part.candidates:,}",
        vocab_size=f"{part.nca.vocab_size:,}", grid_start=part.nca.grid_start,
        grid_end=part.nca.grid_end, splits_table=splits_table(part),
        ratio_rows=f"{part.ratios.size:,}", quantiles_table=quantiles_table(part.ratios),
        used=f"{z['used']:,}", patch_tokens=f"{part.nca.grid_start:,}", top_token=z["top_token"],
        top_share=f"{z['top_share']:.1%}", figures=figures_markdown(part) if figures else "",
        repo_id=repo_id)


def render_card(manifest: dict, parts: list[PartitionStats], *, repo_id: str = DEFAULT_REPO,
                figures: bool = True) -> str:
    """The whole README.md of a build, from its manifest and scanned statistics."""
    import yaml

    default = next(p for p in parts if p.name == default_config(parts))
    nca = default.nca
    return _template("dataset_card.md").substitute(
        yaml=yaml.safe_dump(card_metadata(parts), sort_keys=False, allow_unicode=True, width=100),
        version=manifest.get("ncagen_version", __version__), config_count=len(parts),
        total_rows=f"{sum(p.rows for p in parts):,}",
        total_tokens=f"{sum(p.tokens for p in parts):,}",
        configs_table=configs_table(parts), repo_id=repo_id, default_config=default.name,
        tokens_per_grid=nca.tokens_per_grid, patches_per_grid=nca.patches_per_grid,
        seq_len=nca.seq_len, seq_len_minus_one=nca.seq_len - 1, vocab_size=f"{nca.vocab_size:,}",
        vocab_id=nca.vocab_size,
        ratio_grids=nca.ratio_grids, zstd_level=nca.zstd_level, patch=nca.patch,
        last_cell=nca.patch * nca.patch - 1, layout_table=layout_table(parts),
        config_sections="\n".join(config_section(p, repo_id, figures) for p in parts),
        conv_channels=nca.conv_channels, hidden=nca.hidden, grid=nca.grid,
        temperature=f"{nca.temperature:g}", identity_bias=f"{nca.identity_bias:g}",
        burn_in=nca.burn_in, dt=nca.dt, gzip_level=nca.gzip_level,
        parameters_table=parameters_table(manifest),
        splits_sentence=splits_sentence(parts),
        command=manifest.get("command") or "(not recorded)")


def splits_sentence(parts: list[PartitionStats]) -> str:
    """What the card says about the splits every config has."""
    if all("validation" in p.splits for p in parts):
        return ("Each config has a `train` and a `validation` split; the rows of the two splits "
                "come from different random rules.")
    return "Each config has a `train` split (this build has no validation rows for some configs)."


def _template(name: str) -> string.Template:
    return string.Template((TEMPLATES / name).read_text(encoding="utf-8"))


# figures -----------------------------------------------------------------------------------
def samples_png(part: PartitionStats) -> bytes:
    """The first grids of a config's sample rows, one strip per row, as PNG."""
    from PIL import Image

    from .tokens import decode_sequence, render_strip

    strips = [render_strip(decode_sequence(ids, part.nca)[:STRIP_GRIDS], part.nca.states, scale=5)
              for ids in part.samples]
    gap = 6
    width = max(s.width for s in strips)
    height = sum(s.height for s in strips) + gap * (len(strips) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    y = 0
    for s in strips:
        canvas.paste(s, (0, y))
        y += s.height + gap
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 2.8), dpi=100)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(**PLOT_MARGINS)
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp: stable bytes
    return buf.getvalue()


def ratio_histogram_png(part: PartitionStats) -> bytes:
    """Histogram of a config's gzip ratios with the band edges, as PNG."""
    fig, ax = _figure()
    lo, hi = part.band.lo, part.band.hi
    ax.hist(part.ratios.astype(np.float64), bins=np.linspace(lo, hi, 51), color="#4c72b0")
    for edge in (lo, hi):
        ax.axvline(edge, color="#c44e52", linestyle="--", linewidth=1)
    pad = 0.04 * (hi - lo)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_xlabel(f"gzip ratio of the first {part.nca.ratio_grids} grids")
    ax.set_ylabel("rows")
    ax.set_title(f"{part.name} ({part.ratios.size:,} rows)", fontsize=10)
    return _png(fig)


def zipf_png(part: PartitionStats) -> bytes:
    """Rank-frequency plot of a config's patch tokens (log-log), as PNG."""
    counts = part.token_counts[:part.nca.grid_start]
    freq = np.sort(counts[counts > 0])[::-1] / max(counts.sum(), 1)
    ranks = np.arange(1, freq.size + 1)
    fig, ax = _figure()
    ax.loglog(ranks, freq, color="#4c72b0", linewidth=1.5, label="patch tokens")
    if freq.size:
        ax.loglog(ranks, freq[0] / ranks, color="grey", linestyle=":", linewidth=1, label="1/rank")
    ax.set_xlabel("rank")
    ax.set_ylabel("frequency")
    ax.set_title(f"{part.name}: token rank-frequency", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def render_figures(part: PartitionStats) -> dict[str, bytes]:
    """Relative path -> PNG bytes of every figure of a config."""
    paths = figure_paths(part.name)
    return {paths["samples"]: samples_png(part), paths["gzip_ratio"]: ratio_histogram_png(part),
            paths["zipf"]: zipf_png(part)}


# writing -----------------------------------------------------------------------------------
def write_card(out_dir: str, *, figures: bool = True, repo_id: str = DEFAULT_REPO,
               quick: bool = False) -> str:
    """(Re)write DIR/README.md (and DIR/figures/*.png) from the build's files; returns its path.
    `quick`: token counts from the shards' footers (the build's own card), see scan_partition."""
    from .storage import Storage

    store = Storage(out_dir)
    manifest, parts = scan_build(out_dir, quick)
    if figures:
        from concurrent.futures import ThreadPoolExecutor

        pngs = [item for part in parts for item in render_figures(part).items()]
        with ThreadPoolExecutor(4, thread_name_prefix="ncagen-card") as writers:  # uploads overlap
            list(writers.map(lambda item: store.write_bytes(*item), pngs))
    store.write_bytes(README, render_card(manifest, parts, repo_id=repo_id,
                                          figures=figures).encode())
    return store.url(README)


# command line ------------------------------------------------------------------------------
def main(argv: list[str] | None = None, prog: str = "python -m ncagen.card") -> int:
    """CLI entry point; returns the exit status."""
    from .cli import Parser

    p = Parser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("dir", metavar="DIR", help="build directory (holds ncagen.json)")
    p.add_argument("--repo", default=DEFAULT_REPO, metavar="ORG/NAME",
                   help="Hub repo id the usage examples load from")
    p.add_argument("--no-figures", action="store_true", help="write the card without figures")
    p.add_argument("--quick", action="store_true",
                   help="take token counts from the shards' footers instead of reading every "
                        "token (what the build does; a plain run re-reads and checks everything)")
    args = p.parse_args(argv)
    try:
        path = write_card(args.dir, figures=not args.no_figures, repo_id=args.repo,
                          quick=args.quick)
    except (ValueError, OSError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
