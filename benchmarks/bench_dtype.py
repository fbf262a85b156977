"""What list<uint16> input_ids would save: one real build, its Parquet rewritten both ways.

    python benchmarks/bench_dtype.py [--rows 5000] [--band 0.5-1.0] [--states 10] [--repeat 3]

Builds one train shard (executor local, CPU), then writes its rows twice with the build's own
writer settings (zstd, the build's row groups): input_ids as list<int32> (as shipped) and as
list<uint16> (every other column unchanged). For each it measures the Parquet size (what a
consumer downloads), `datasets.load_dataset("parquet", ...)` into a fresh cache dir (wall time
and the size of the Arrow files it leaves), and a full read of input_ids from the loaded
dataset; then checks that both give the same token values. Vocabularies up to 65,536 fit
uint16: 10,002 for n = 10, 50,627 for n = 15.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def build_rows(root: pathlib.Path, rows: int, band: str, states: int) -> pathlib.Path:
    """A real single-shard build; the path of its train shard."""
    from ncagen.build import build
    from ncagen.config import Band
    from ncagen.plan import BuildConfig

    cfg = BuildConfig(out=str(root / "build"), bands=(Band.parse(band),), states=(states,),
                      rows=rows, shard_rows=rows, executor="local", device="cpu")
    build(cfg, progress_stream=open("/dev/null", "w"))
    (shard,) = sorted((root / "build" / "data").glob("*/train-*.parquet"))
    return shard


def rewrite(table: pa.Table, path: pathlib.Path, token_type: pa.DataType) -> None:
    """The table with input_ids as list<token_type>, written as the build writes shards."""
    from ncagen.shards import ROW_GROUP_ROWS

    i = table.schema.get_field_index("input_ids")
    ids = table.column(i).cast(pa.list_(token_type))
    out = table.set_column(i, pa.field("input_ids", pa.list_(token_type)), ids)
    pq.write_table(out, path, compression="zstd", row_group_size=ROW_GROUP_ROWS)


def tree_bytes(root: pathlib.Path, suffix: str = ".arrow") -> int:
    return sum(p.stat().st_size for p in root.rglob(f"*{suffix}"))


def load_once(path: pathlib.Path, cache: pathlib.Path) -> tuple[float, float, int, np.ndarray]:
    """(load_dataset seconds, full-read seconds, Arrow cache bytes, the tokens) in a fresh cache."""
    import datasets

    t0 = time.perf_counter()
    ds = datasets.load_dataset("parquet", data_files={"train": str(path)}, split="train",
                               cache_dir=str(cache))
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    tokens = np.concatenate([np.asarray(b["input_ids"]).reshape(-1)
                             for b in ds.with_format("numpy").iter(batch_size=1024)])
    read = time.perf_counter() - t0
    return load, read, tree_bytes(cache), tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=5000)
    p.add_argument("--band", default="0.5-1.0")
    p.add_argument("--states", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3, help="loads of each variant (fresh caches)")
    args = p.parse_args()
    import datasets

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        t0 = time.perf_counter()
        shard = build_rows(root, args.rows, args.band, args.states)
        print(f"built {args.rows:,} rows (band {args.band}, n = {args.states}) in "
              f"{time.perf_counter() - t0:.1f} s; shard {shard.stat().st_size:,} bytes, "
              f"{shard.stat().st_size / args.rows:,.0f} bytes/row")
        table = pq.read_table(shard)
        seq_len = len(table.column("input_ids")[0])
        results, tokens = {}, {}
        for name, dtype in (("int32", pa.int32()), ("uint16", pa.uint16())):
            path = root / f"{name}.parquet"
            rewrite(table, path, dtype)
            runs = [load_once(path, root / f"cache_{name}_{k}") for k in range(args.repeat)]
            tokens[name] = runs[0][3]
            results[name] = {"parquet": path.stat().st_size,
                             "load": statistics.median(r[0] for r in runs),
                             "read": statistics.median(r[1] for r in runs),
                             "cache": runs[0][2]}
        equal = np.array_equal(tokens["int32"].astype(np.int64), tokens["uint16"].astype(np.int64))
        assert equal and tokens["int32"].size == args.rows * seq_len
        print(f"\nseq_len {seq_len}; token values equal: {equal}; median of {args.repeat} loads\n")
        print("| input_ids | Parquet (download) | bytes/row | datasets cache (Arrow) | "
              "load_dataset | full read of input_ids |")
        print("|---|---|---|---|---|---|")
        for name, r in results.items():
            print(f"| list<{name}> | {r['parquet'] / 1e6:.2f} MB | {r['parquet'] / args.rows:,.0f} | "
                  f"{r['cache'] / 1e6:.2f} MB | {r['load']:.2f} s | {r['read']:.2f} s |")
        a, b = results["int32"], results["uint16"]
        print(f"\nuint16 / int32: Parquet {b['parquet'] / a['parquet']:.3f}, cache "
              f"{b['cache'] / a['cache']:.3f}, load {b['load'] / a['load']:.2f}, "
              f"read {b['read'] / a['read']:.2f}")


if __name__ == "__main__":
    main()
