"""Parquet shards and the build manifest: schema, atomic writes, records, resume checks.

Layout (the Hub dataset publishes it as is):
    DIR/ncagen.json                                   the manifest (config, generator, shards)
    DIR/data/<config>/<split>-<i:05d>-of-<n:05d>.parquet
    DIR/preview/train-00000-of-00001.parquet          the card's preview config (not a shard)
A shard is written through `Storage.atomic_write` (whole under its final name, or not at all)
and its size, sha256 and modification time are recorded as it is written. On resume a shard is
kept only when it matches its record: by size and sha256 on a local disk (a read of the file),
by size and modification time on an object store (one listing, no downloads). A shard found
without a record (the driver died between a worker's write and the manifest update) is read
once and adopted when its footer says it is exactly the shard the plan wants. Its generation
statistics ride in the file's metadata: candidates tried, rows accepted, the shard key, and the
count of every token id (so a card can be written from the footers, without reading the tokens).
"""

from __future__ import annotations

import base64
import json
import posixpath
import zlib
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .config import NCAConfig
from .storage import Entry, Storage

MANIFEST = "ncagen.json"
PREVIEW_DIR = "preview"  # the card's preview rows: beside data/, which holds only shards
ROW_GROUP_ROWS = 8192  # ~32 MiB of int32 tokens at seq_len 1024, well under the viewer's limits
STATS_KEY = b"ncagen.shard"


def schema(cfg: NCAConfig) -> pa.Schema:
    """The columns of every shard."""
    return pa.schema([
        pa.field("input_ids", pa.list_(pa.int32())),
        pa.field("gzip_ratio", pa.float32()),
        pa.field("zstd_ratio", pa.float32()),
        pa.field("states", pa.int32()),
        pa.field("band", pa.string()),
        pa.field("rule_seed", pa.int64()),
        pa.field("sim", pa.int32()),
    ])


def pack_counts(counts) -> str:
    """Token counts (vocab,) int64 -> compact text for the footer (base64 of deflated bytes)."""
    import numpy as np

    raw = np.ascontiguousarray(counts, dtype="<i8").tobytes()
    return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def unpack_counts(text: str, size: int):
    """The inverse of pack_counts; ValueError when the text is not `size` counts."""
    import numpy as np

    try:
        counts = np.frombuffer(zlib.decompress(base64.b64decode(text)), "<i8").astype(np.int64)
    except (zlib.error, ValueError, TypeError) as e:
        raise ValueError(f"unreadable token counts ({e})") from None
    if counts.shape != (size,):
        raise ValueError(f"{counts.size} token counts for a vocabulary of {size}")
    return counts


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def shard_path(config_name: str, split: str, index: int, count: int) -> str:
    """Path of a shard relative to the build directory."""
    return posixpath.join("data", config_name, shard_name(split, index, count))


@dataclass
class ShardResult:
    """A finished shard: where it is, what it holds, what it cost, how to recognise it."""

    path: str
    rows: int
    tokens: int
    sha256: str
    bytes: int
    mtime_ns: int
    candidates: int
    accepted: int
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def band_column(cols: dict, band_names: str | list[str]) -> list[str]:
    """The `band` value of each row: its part's name (a mixture's "part" column picks it)."""
    if isinstance(band_names, str):
        return [band_names] * len(cols["rule_seed"])
    if "part" not in cols:
        assert len(band_names) == 1
        return band_names * len(cols["rule_seed"])
    return [band_names[k] for k in cols["part"]]


def to_table(cols: dict, cfg: NCAConfig, band_names: str | list[str]) -> pa.Table:
    """Column arrays from the generator -> an Arrow table with the shard schema; `band_names`:
    the partition's config name, or each part's (see band_column)."""
    ids = cols["input_ids"]  # (B, seq_len) int32
    B = ids.shape[0]
    offsets = pa.array(range(0, (B + 1) * cfg.seq_len, cfg.seq_len), pa.int32())
    return pa.Table.from_arrays([
        pa.ListArray.from_arrays(offsets, pa.array(ids.reshape(-1), pa.int32())),
        pa.array(cols["gzip_ratio"], pa.float32()),
        pa.array(cols["zstd_ratio"], pa.float32()),
        pa.array([cfg.states] * B, pa.int32()),
        pa.array(band_column(cols, band_names), pa.string()),
        pa.array(cols["rule_seed"], pa.int64()),
        pa.array(cols["sim"], pa.int32()),
    ], schema=schema(cfg))


def _regroup(tables: Iterable[pa.Table], rows: int) -> Iterator[pa.Table]:
    """Re-chunk a stream of tables into tables of `rows` rows (the last may be shorter), each
    one contiguous chunk: the Parquet writer cuts its pages by batches of values, so a row group
    fed in pieces whose rows are not whole batches (seq_len not a multiple of 1024) could be
    encoded differently, and a file's bytes would depend on how its rows were batched."""
    pending, count = [], 0
    for t in tables:
        pending.append(t)
        count += t.num_rows
        while count >= rows:
            whole = pa.concat_tables(pending)
            yield whole.slice(0, rows).combine_chunks()
            rest = whole.slice(rows)
            pending, count = ([rest] if rest.num_rows else []), rest.num_rows
    if count:
        yield pa.concat_tables(pending).combine_chunks()


def write_shard(store: Storage, rel_path: str, tables: Iterable[pa.Table], schema_: pa.Schema,
                stats_fn, defer: bool = False):
    """Stream tables into rel_path atomically; `stats_fn()` gives the metadata to embed.
    Returns the ShardResult, or with `defer` a function that makes the file appear (uploads a
    spooled object; see Storage.atomic_write) and returns it."""
    rows = 0
    with store.atomic_write(rel_path, defer=defer) as sink:
        writer = pq.ParquetWriter(sink, schema_, compression="zstd")
        try:
            for t in _regroup(tables, ROW_GROUP_ROWS):
                writer.write_table(t, row_group_size=ROW_GROUP_ROWS)
                rows += t.num_rows
            stats = stats_fn()
            writer.add_key_value_metadata({STATS_KEY: json.dumps(stats).encode()})
        finally:
            writer.close()

    def finish() -> ShardResult:
        w = sink.publish()
        return ShardResult(path=rel_path, rows=rows, tokens=int(stats.get("tokens", 0)),
                           sha256=w.sha256, bytes=w.bytes, mtime_ns=w.mtime_ns,
                           candidates=int(stats.get("candidates", 0)),
                           accepted=int(stats.get("accepted", 0)))

    return finish if defer else finish()


def shard_stats(store: Storage, rel_path: str) -> tuple[int, dict]:
    """(rows, embedded generation stats) of a shard, from its footer alone."""
    with store.open_input(rel_path) as f:
        meta = pq.ParquetFile(f).metadata
    return meta.num_rows, json.loads((meta.metadata or {}).get(STATS_KEY, b"{}"))


def matches_record(store: Storage, record: dict, entry: Entry | None) -> bool:
    """Whether the file listed as `entry` is the shard `record` describes (see module doc)."""
    if entry is None or entry.bytes != record.get("bytes"):
        return False
    if store.local:
        return store.sha256(record["path"]) == (record["bytes"], record.get("sha256"))
    return entry.mtime_ns == record.get("mtime_ns")


def adopt(store: Storage, rel_path: str, rows: int, key: int, entry: Entry) -> ShardResult | None:
    """The record of an unrecorded shard file that is exactly the planned one, else None."""
    try:
        got_rows, stats = shard_stats(store, rel_path)
    except (OSError, pa.ArrowException):
        return None  # torn, or not Parquet at all
    if got_rows != rows or stats.get("key") != str(key):
        return None
    size, digest = store.sha256(rel_path)
    if size != entry.bytes:
        return None
    return ShardResult(path=rel_path, rows=got_rows, tokens=int(stats.get("tokens", 0)),
                       sha256=digest, bytes=size, mtime_ns=entry.mtime_ns,
                       candidates=int(stats.get("candidates", 0)),
                       accepted=int(stats.get("accepted", 0)))


def read_manifest(root: str | Storage) -> dict | None:
    """The manifest of a build directory, or None when there is none."""
    store = root if isinstance(root, Storage) else Storage(root)
    return store.read_json(MANIFEST)


def write_manifest(root: str | Storage, manifest: dict) -> None:
    """Write the manifest atomically."""
    store = root if isinstance(root, Storage) else Storage(root)
    store.write_json(MANIFEST, manifest)
