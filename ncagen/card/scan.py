"""Scanning a build: its Parquet files and footers -> statistics, cross-checked with the manifest.

Every number the card shows comes from here: rows, tokens, Arrow and file sizes, gzip ratios,
token counts and the first train rows of each config, recomputed from the Parquet files and
checked against the manifest `ncagen.json`; a mismatch is a CardError, never a silently wrong
card. `quick` (the build's own card) takes each shard's token counts from the footer its worker
wrote and reads only the small columns and one row group of each size.
"""

from __future__ import annotations

import contextlib
import posixpath
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..config import Band, ConfigError, Mix, NCAConfig, config_name

SPLITS = ("train", "validation")
SAMPLE_ROWS = 3  # trajectories shown in a config's sample strip
HEAD_ROWS = 24  # first train rows kept: the sample strip's and the preview config's
HEAD_COLUMNS = ("input_ids", "gzip_ratio", "band", "rule_seed", "sim")  # what is kept of them
SCAN_BATCH = 8192  # rows read at a time (the shards' row-group size); num_bytes is summed per
#                    batch (list offsets included), so another size would change the card's YAML
COUNT_CHUNK = 1 << 18  # token ids counted at a time


class CardError(ValueError):
    """The build directory cannot be described: missing, incomplete or inconsistent."""


_KINDS = {dict: "an object", list: "a list", str: "a string", int: "an integer",
          (int, float): "a number"}


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
    """One config (band or mixture x alphabet), recomputed from its Parquet files."""

    name: str
    band: Band | Mix
    nca: NCAConfig
    splits: dict  # split -> SplitStats
    ratios: np.ndarray  # (rows,) float32, gzip ratio of every row, train then validation
    token_counts: np.ndarray  # (vocab_size,) int64, occurrences of every token id
    head: list  # the first HEAD_ROWS train rows: dicts of HEAD_COLUMNS, input_ids (seq_len,)
    candidates: int  # summed from the shards' embedded generation stats
    accepted: int
    parts: np.ndarray | None = None  # (rows,) int8, a mixture's: each row's component, by `band`

    @property
    def components(self) -> list[tuple[str, Band]]:
        """(config name, band) of each band the rows come from: the band, or a mixture's."""
        bands = self.band.bands if isinstance(self.band, Mix) else (self.band,)
        return [(config_name(b, self.nca), b) for b in bands]

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.splits.values())

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.splits.values())

    @property
    def samples(self) -> list:
        """input_ids (seq_len,) of the first SAMPLE_ROWS train rows, for the sample strip."""
        return [r["input_ids"] for r in self.head[:SAMPLE_ROWS]]

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / max(self.candidates, 1)


def load_manifest(out_dir: str) -> dict:
    """The manifest of a finished build, or CardError saying why there is none to describe."""
    from pyarrow import fs

    from ..shards import MANIFEST, read_manifest
    from ..storage import filesystem, redact

    name = redact(out_dir)
    fsys, base = filesystem(out_dir)
    if fsys.get_file_info(base).type != fs.FileType.Directory:
        raise CardError(f"{name} is not a directory")
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise CardError(f"{name} holds no ncagen build ({MANIFEST} is missing)")
    where = f"{name.rstrip('/')}/{MANIFEST}"
    if not isinstance(manifest, dict):
        raise CardError(f"{where} must hold a JSON object, not {_json_kind(manifest)}")
    if not manifest.get("complete") or not manifest.get("partitions"):
        raise CardError(f"the build in {name} is not complete; rerun its build command first")
    check_manifest(manifest, where)
    return manifest


def check_manifest(manifest: dict, where: str) -> None:
    """Raise CardError naming the first field the card needs that the manifest `where` lacks
    or holds in another shape."""
    config = _field(manifest, "config", dict, where)
    nca = _field(config, "nca", dict, where, "config")
    for key in ("bands", "mixes", "partitions"):
        if key in config:
            for k, item in enumerate(_field(config, key, list, where, "config")):
                _typed(item, str, where, f"config.{key}[{k}]")
    for rel, record in _field(manifest, "shards", dict, where).items():
        _field(_typed(record, dict, where, f"shards[{rel!r}]"), "rows", int, where,
               f"shards[{rel!r}]")
        if "seconds" in record:
            _field(record, "seconds", (int, float), where, f"shards[{rel!r}]")
    for key, kind in (("machine", dict), ("build_seconds", (int, float))):
        if manifest.get(key) is not None:
            _field(manifest, key, kind, where)
    for name, p in _field(manifest, "partitions", dict, where).items():
        label = f"partitions[{name!r}]"
        _typed(p, dict, where, label)
        for key, kind in (("states", int), ("lo", (int, float)), ("hi", (int, float)),
                          ("candidates", int), ("accepted", int)):
            _field(p, key, kind, where, label)
        for split, st in _field(p, "splits", dict, where, label).items():
            for key in ("rows", "tokens", "shards"):
                _field(_typed(st, dict, where, f"{label}.splits.{split}"), key, int, where,
                       f"{label}.splits.{split}")
        try:
            NCAConfig(**nca, states=p["states"])
            if "mix" in p:
                band = Mix.parse(_field(p, "band", str, where, label))
            else:
                Band(float(p["lo"]), float(p["hi"]))
        except (TypeError, ConfigError) as e:  # TypeError: a parameter this version lacks
            raise CardError(f"{where} is malformed: {label}: {e}") from None
        if "mix" in p:
            mix = _field(p, "mix", list, where, label)
            if len(mix) != len(band.bands):
                raise CardError(f"{where} is malformed: {label}.mix must have one entry per "
                                f"band of {p['band']}")
            for k, entry in enumerate(mix):
                _field(_typed(entry, dict, where, f"{label}.mix[{k}]"), "rows", int, where,
                       f"{label}.mix[{k}]")


def _field(obj: dict, key: str, kind, where: str, label: str = ""):
    """obj[key] if it is of `kind`, else CardError naming the field (`label`.`key`)."""
    path = f"{label}.{key}" if label else key
    if key not in obj:
        raise CardError(f"{where} is malformed: it has no {path}")
    return _typed(obj[key], kind, where, path)


def _typed(value, kind, where: str, path: str):
    """`value` if it is of `kind` (a bool is no number here), else CardError naming `path`."""
    if isinstance(value, bool) or not isinstance(value, kind):
        raise CardError(f"{where} is malformed: {path} must be {_KINDS[kind]}, "
                        f"not {_json_kind(value)}")
    return value


def _json_kind(value) -> str:
    """What a JSON value is, for messages: 'a list', 'null', ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return next((name for kind, name in _KINDS.items() if isinstance(value, kind)), "a number")


def partition_config(manifest: dict, states: int) -> NCAConfig:
    """The generation config of one alphabet of a build."""
    return NCAConfig(**manifest["config"]["nca"], states=states)


def parquet_files(out_dir: str) -> list[str]:
    """Paths (relative to the build) of every finished Parquet file under data/."""
    from pyarrow import fs

    from ..storage import filesystem

    fsys, base = filesystem(out_dir)
    data = posixpath.join(base, "data")
    if fsys.get_file_info(data).type != fs.FileType.Directory:
        return []
    infos = fsys.get_file_info(fs.FileSelector(data, recursive=True))
    return sorted(posixpath.relpath(i.path, base) for i in infos
                  if i.type == fs.FileType.File and i.path.endswith(".parquet"))


def scan_partition(out_dir: str, name: str, band: Band | Mix, nca: NCAConfig, files: dict,
                   quick: bool = False) -> PartitionStats:
    """Read one config's Parquet files ({split: [relpath]}) and compute its statistics.

    `quick` takes each shard's token counts from the footer the build's worker wrote and reads
    only the small columns and one row group of each size (all groups of a config have the same
    layout, so the same Arrow size); a file without counts in its footer is read in full.
    The statistics are the same either way (tests/test_card.py compares the two cards).
    A mixture's rows each carry a component's config name in `band`; they are told apart by it.
    """
    import json

    import pyarrow.parquet as pq
    from pyarrow import fs

    from ..shards import STATS_KEY, schema, unpack_counts
    from ..storage import filesystem, redact

    fsys, base = filesystem(out_dir)
    local = isinstance(fsys, fs.LocalFileSystem)
    expected = schema(nca)
    splits, ratios, head = {}, [], []
    counts = np.zeros(nca.vocab_size, np.int64)
    group_bytes: dict[int, int] = {}  # rows of a row group -> its Arrow size
    candidates = accepted = 0
    mixed = isinstance(band, Mix)
    names = [config_name(b, nca) for b in band.bands] if mixed else [name]
    parts = []  # a mixture's: each row's component

    def add_parts(column, rel: str) -> None:
        if mixed:
            got = np.asarray([names.index(v) if v in names else -1 for v in column.to_pylist()],
                             np.int8)
            if (got < 0).any():
                raise CardError(f"{rel} has rows whose band is not one of {', '.join(names)}")
            parts.append(got)

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
        for col, want in (("states", [nca.states]), ("band", names)):
            if any(v is not None and v not in want for v in batch.column(col).unique().to_pylist()):
                raise CardError(f"{rel} has rows whose {col} is not {' or '.join(map(str, want))}")
        if split == "train" and len(head) < HEAD_ROWS:
            rows = batch.slice(0, HEAD_ROWS - len(head)).select(list(HEAD_COLUMNS)).to_pylist()
            head.extend({**r, "input_ids": np.asarray(r["input_ids"], np.int32)} for r in rows)
        group_bytes.setdefault(batch.num_rows, batch.nbytes)
        return values.size

    for split, paths in files.items():
        st = splits[split] = SplitStats(files=list(paths))
        for rel in paths:
            where = f"{redact(out_dir).rstrip('/')}/{rel}"
            with _reading(rel, where, local), fsys.open_input_file(posixpath.join(base, rel)) as f:
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
                        if rows not in group_bytes or (split == "train" and len(head) < HEAD_ROWS):
                            take(pf.read_row_group(i).to_batches()[0], rel, split, False)
                        st.num_bytes += group_bytes[rows]
                    small = pf.read(columns=["gzip_ratio", "band"] if mixed else ["gzip_ratio"])
                    ratio = small.column("gzip_ratio").combine_chunks()
                    ratios.append(_numpy(ratio, np.float32, rel, "gzip_ratio"))
                    if mixed:
                        add_parts(small.column("band"), rel)
                    st.rows += sum(groups)
                    st.tokens += int(found.sum())
                else:
                    for batch in pf.iter_batches(batch_size=SCAN_BATCH):
                        st.tokens += take(batch, rel, split, True)
                        ratios.append(_numpy(batch.column("gzip_ratio"), np.float32, rel,
                                             "gzip_ratio"))
                        add_parts(batch.column("band"), rel)
                        st.num_bytes += batch.nbytes
                        st.rows += batch.num_rows
    all_ratios = np.concatenate(ratios) if ratios else np.zeros(0, np.float32)
    return PartitionStats(name, band, nca, splits, all_ratios, counts, head, candidates,
                          accepted, np.concatenate(parts) if mixed and parts else
                          (np.zeros(0, np.int8) if mixed else None))


@contextlib.contextmanager
def _reading(rel: str, where: str, local: bool) -> Iterator[None]:
    """Name the file in the errors of reading it: one that is not Parquet (torn, say) is a
    CardError, a failure of its storage a StorageError."""
    import json

    import pyarrow as pa

    from ..storage import StorageError, describe_error

    try:
        yield
    except (pa.ArrowInvalid, json.JSONDecodeError, OSError) as e:
        # pyarrow's decode errors (a torn footer: "Couldn't deserialize thrift") are OSErrors
        # without an errno; a local disk's failures carry one, an object store's are its own
        decode = e.errno is None and ("thrift" in str(e) or "Parquet" in str(e)) \
            if isinstance(e, OSError) else True
        if isinstance(e, OSError) and not decode and not (local and e.errno is None):
            raise StorageError(describe_error(e, where)) from e
        raise CardError(f"{rel} is not a readable Parquet file ({' '.join(str(e).split())}); "
                        "rerun its build command") from None


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
        band = Mix.parse(p["band"]) if "mix" in p else Band(float(p["lo"]), float(p["hi"]))
        part = scan_partition(out_dir, name, band, nca, files, quick)
        cross_check(part, p, manifest["shards"])
        parts.append(part)
    return manifest, parts


def _ordered(partitions: dict) -> list[tuple[str, dict]]:
    """Configs in a stable order: by alphabet, then band."""
    return sorted(partitions.items(), key=lambda kv: (kv[1]["states"], kv[1]["lo"], kv[1]["hi"]))


def cross_check(part: PartitionStats, entry: dict, shards: dict) -> None:
    """Raise CardError where the Parquet files and the manifest disagree."""
    from ..complexity import gzip_ratio_of_row

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
    for k, (name, band) in enumerate(part.components):
        mine = part.ratios if part.parts is None else part.ratios[part.parts == k]
        inside = band.mask(mine)
        if not inside.all():
            raise CardError(f"{part.name}: {int((~inside).sum())} rows of {name} have a gzip "
                            f"ratio outside the band {band}")
        if "mix" in entry and mine.size != entry["mix"][k]["rows"]:
            raise CardError(f"{part.name}: the manifest says {entry['mix'][k]['rows']:,} rows of "
                            f"{name}, the Parquet files hold {mine.size:,}")
    if part.ratios.size and part.samples:
        stored = part.ratios[0]  # the first train row's, since train is read first
        if gzip_ratio_of_row(part.samples[0], part.nca) != stored:
            raise CardError(f"{part.name}: the first row's gzip ratio does not match its tokens")
