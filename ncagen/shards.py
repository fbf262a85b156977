"""Parquet shards and the build manifest: schema, atomic writes, resume, checksums.

Layout (the Hub dataset publishes it as is):
    DIR/ncagen.json                                   the manifest (config, shards, stats)
    DIR/data/<config>/<split>-<i:05d>-of-<n:05d>.parquet
A shard is written under a temporary name and renamed into place when complete, so a final
name always holds a whole shard; its generation statistics ride in the file's metadata, so a
shard found on disk after a crash is recognised without the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import uuid
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .config import NCAConfig

MANIFEST = "ncagen.json"
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


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def shard_path(config_name: str, split: str, index: int, count: int) -> str:
    """Path of a shard relative to the build directory."""
    return posixpath.join("data", config_name, shard_name(split, index, count))


@dataclass
class ShardResult:
    """A finished shard: where it is, what it holds, what it cost."""

    path: str
    rows: int
    tokens: int
    sha256: str
    bytes: int
    candidates: int
    accepted: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def filesystem(root: str):
    """A pyarrow filesystem and the path of `root` inside it (local paths, s3://, fsspec URLs)."""
    from pyarrow import fs

    if "://" not in root:
        return fs.LocalFileSystem(), os.path.abspath(root)
    try:
        return fs.FileSystem.from_uri(root)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        import fsspec

        fsys, path = fsspec.core.url_to_fs(root)
        return fs.PyFileSystem(fs.FSSpecHandler(fsys)), path


def to_table(cols: dict, cfg: NCAConfig, band_name: str) -> pa.Table:
    """Column arrays from the generator -> an Arrow table with the shard schema."""
    ids = cols["input_ids"]  # (B, seq_len) int32
    B = ids.shape[0]
    offsets = pa.array(range(0, (B + 1) * cfg.seq_len, cfg.seq_len), pa.int32())
    return pa.Table.from_arrays([
        pa.ListArray.from_arrays(offsets, pa.array(ids.reshape(-1), pa.int32())),
        pa.array(cols["gzip_ratio"], pa.float32()),
        pa.array(cols["zstd_ratio"], pa.float32()),
        pa.array([cfg.states] * B, pa.int32()),
        pa.array([band_name] * B, pa.string()),
        pa.array(cols["rule_seed"], pa.int64()),
        pa.array(cols["sim"], pa.int32()),
    ], schema=schema(cfg))


def _regroup(tables: Iterable[pa.Table], rows: int) -> Iterator[pa.Table]:
    """Re-chunk a stream of tables into tables of `rows` rows (the last may be shorter)."""
    pending, count = [], 0
    for t in tables:
        pending.append(t)
        count += t.num_rows
        while count >= rows:
            whole = pa.concat_tables(pending)
            yield whole.slice(0, rows)
            rest = whole.slice(rows)
            pending, count = ([rest] if rest.num_rows else []), rest.num_rows
    if count:
        yield pa.concat_tables(pending)


def write_shard(root: str, rel_path: str, tables: Iterable[pa.Table], schema_: pa.Schema,
                stats_fn) -> ShardResult:
    """Stream tables into root/rel_path atomically; `stats_fn()` gives the metadata to embed."""
    fsys, base = filesystem(root)
    final = posixpath.join(base, rel_path)
    tmp = f"{final}.{uuid.uuid4().hex[:8]}.tmp"
    fsys.create_dir(posixpath.dirname(final), recursive=True)
    try:
        with fsys.open_output_stream(tmp) as sink:
            writer = pq.ParquetWriter(sink, schema_, compression="zstd")
            try:
                for t in _regroup(tables, ROW_GROUP_ROWS):
                    writer.write_table(t, row_group_size=ROW_GROUP_ROWS)
                writer.add_key_value_metadata({STATS_KEY: json.dumps(stats_fn()).encode()})
            finally:
                writer.close()
        fsys.move(tmp, final)
    except BaseException:
        try:
            fsys.delete_file(tmp)
        except (FileNotFoundError, OSError):
            pass
        raise
    return read_shard_result(root, rel_path)


def read_shard_result(root: str, rel_path: str) -> ShardResult:
    """Describe a finished shard from the file itself (rows, tokens, checksum, embedded stats)."""
    fsys, base = filesystem(root)
    path = posixpath.join(base, rel_path)
    digest, size = hashlib.sha256(), 0
    with fsys.open_input_stream(path) as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
            size += len(chunk)
    with fsys.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata
    extra = json.loads((meta.metadata or {}).get(STATS_KEY, b"{}"))
    return ShardResult(path=rel_path, rows=meta.num_rows, tokens=int(extra.get("tokens", 0)),
                       sha256=digest.hexdigest(), bytes=size,
                       candidates=int(extra.get("candidates", 0)),
                       accepted=int(extra.get("accepted", 0)),
                       seconds=float(extra.get("seconds", 0.0)))


def exists(root: str, rel_path: str) -> bool:
    from pyarrow import fs

    fsys, base = filesystem(root)
    return fsys.get_file_info(posixpath.join(base, rel_path)).type == fs.FileType.File


def read_manifest(root: str) -> dict | None:
    """The manifest of a build directory, or None when there is none."""
    fsys, base = filesystem(root)
    try:
        with fsys.open_input_stream(posixpath.join(base, MANIFEST)) as f:
            return json.loads(f.read().decode())
    except FileNotFoundError:
        return None


def write_manifest(root: str, manifest: dict) -> None:
    """Write the manifest atomically (temp name, then rename)."""
    fsys, base = filesystem(root)
    fsys.create_dir(base, recursive=True)
    final = posixpath.join(base, MANIFEST)
    tmp = f"{final}.{uuid.uuid4().hex[:8]}.tmp"
    with fsys.open_output_stream(tmp) as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=False).encode() + b"\n")
    fsys.move(tmp, final)
