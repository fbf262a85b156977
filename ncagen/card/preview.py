"""The preview config: the first train rows of every config, each with a picture of its
trajectory, for the Hub's dataset viewer.

One small Parquet file, `preview/train-00000-of-00001.parquet`, holds HEAD_ROWS rows per
config: the row's sample strip as a `datasets` Image (a struct of PNG bytes and a path, as
`datasets` stores images in Parquet), its config name, gzip ratio, seeds and alphabet. It is
made from the scanned statistics by pure functions. It is not a shard: it lies beside data/
(shards.PREVIEW_DIR), so data/ holds exactly the manifest's shards, and publish uploads it
like the card and its figures.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

from ..shards import PREVIEW_DIR
from .figures import trajectory_png
from .scan import PartitionStats

PREVIEW_CONFIG = "preview"
PREVIEW_FILE = f"{PREVIEW_DIR}/train-00000-of-00001.parquet"
FEATURES = (  # column -> datasets feature, in the file's order
    ("image", {"_type": "Image"}),
    ("band", {"dtype": "string", "_type": "Value"}),
    ("gzip_ratio", {"dtype": "float32", "_type": "Value"}),
    ("rule_seed", {"dtype": "int64", "_type": "Value"}),
    ("sim", {"dtype": "int32", "_type": "Value"}),
    ("states", {"dtype": "int32", "_type": "Value"}),
)


@dataclass(frozen=True)
class PreviewFile:
    """The preview file as the card's YAML declares it."""

    rows: int
    num_bytes: int  # Arrow (in-memory) size, what `datasets` reports as num_bytes
    download_bytes: int  # size of the Parquet file


def preview_schema():
    """The preview file's Arrow schema, with the `datasets` features in its metadata."""
    import pyarrow as pa

    image = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
    types = {"image": image, "band": pa.string(), "gzip_ratio": pa.float32(),
             "rule_seed": pa.int64(), "sim": pa.int32(), "states": pa.int32()}
    features = {"info": {"features": dict(FEATURES)}}
    return pa.schema([pa.field(name, types[name]) for name, _ in FEATURES],
                     metadata={"huggingface": json.dumps(features)})


def preview_table(parts: list[PartitionStats]):
    """The preview rows of every config as an Arrow table (the first train rows, in order)."""
    import pyarrow as pa

    rows = [(p, r) for p in parts for r in p.head]
    cols = {
        "image": [{"bytes": trajectory_png(r["input_ids"], p.nca), "path": None} for p, r in rows],
        "band": [r["band"] for _, r in rows],  # a mixture's rows: their own band's name
        "gzip_ratio": [r["gzip_ratio"] for _, r in rows],
        "rule_seed": [r["rule_seed"] for _, r in rows],
        "sim": [r["sim"] for _, r in rows],
        "states": [p.nca.states for p, _ in rows],
    }
    return pa.Table.from_pydict(cols, schema=preview_schema())


def parquet_bytes(table) -> bytes:
    """A table as the bytes of one Parquet file (one row group)."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def render_preview(parts: list[PartitionStats]) -> tuple[bytes, PreviewFile]:
    """The preview file's bytes and what the card says about it."""
    import pyarrow.parquet as pq

    data = parquet_bytes(preview_table(parts))
    read = pq.read_table(io.BytesIO(data))  # the Arrow size as a reader finds it, like a shard's
    return data, PreviewFile(read.num_rows, read.nbytes, len(data))
