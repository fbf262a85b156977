"""On-the-fly NCA rows for training: the rows a build would write, generated live, no files.

`NCAStream` is a torch `IterableDataset` over the shards a build with the same (config, band,
seed, shard_rows) plans: shard i of a split has the key `build.plan` gives it, and its rows are
`generate.generate`'s output for that key, so a stream and a build yield the same rows, shard by
shard, in the same order. A stream is infinite by default (it keeps going over shard indices
0, 1, 2, ...) or bounded (`rows=N`, the rows of a build with `--rows N`). Without
`shard_rows` a bounded stream cuts its shards as such a build does (`--shard-rows auto`), an
endless one at ENDLESS_SHARD_ROWS.

Shards are dealt round-robin over every consumer, (rank, DataLoader worker): shard i goes to
consumer i % (world_size * num_workers), so no row is yielded twice. Keep shards small enough
that every consumer gets some (`shard_rows`), since the rows of one shard come out of one
consumer.

The band may be a mixture (a `Mix`, or its text '0.3-0.4:1,0.5-1.0:1'): the stream then yields
the rows of the build's `--mix` partition, each with its own band's name in `band`.

A bounded stream gives every rank the same number of rows, so a DDP job does not hang at its
last step waiting for a rank that ran out (`even_ranks=True`, the default): each DataLoader
worker yields the fewest rows that the worker at its position holds on any rank, computed from
the plan (every shard's row count is known, so no communication is needed). The rest, the tail
of the consumers that hold more, is dropped; none is dropped when the shards divide evenly
(rows a multiple of shard_rows * world_size * num_workers). Equal rows per worker position
means equal batches per rank, whatever the batch size.

`load_rank_stream` is the same promise for a published config (a Hub repo or a built
directory) streamed with `datasets` and `split_dataset_by_node`: every rank, and every
DataLoader worker position on it, yields the same number of rows, worked out from the files' row
counts in the build's manifest; `even_split` does the cut for a stream already loaded.

`NCAStream` and `stream_loader` need torch and live in `ncagen.torch_stream`; they can be imported
from here too, on first use. Everything else here needs no torch.

`nca_generator` is the same thing as a plain generator function for
`datasets.IterableDataset.from_generator`, whose list-valued `shards` argument `datasets`
splits over workers and nodes itself; `nca_iterable_dataset` wires it up.

In a DataLoader worker the stream takes its share of the cores, drops the thread pools a fork
copied from the parent (their threads did not come along) and keeps numba off OpenMP, which
breaks in a child forked from a process that used it. `stream_loader` goes further and starts
workers from a fresh forkserver process, which inherits nothing.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Iterator

from .plan import SPLITS, ShardTask, recorded_partitions, shard_key, stream_shard_rows
from .config import Band, ConfigError, Mix, NCAConfig, parse_partition
from .config import config_name as name_of  # read_build's argument is called config_name
from .generate import DEFAULT_BATCH, generate_parts
from .threads import limit_threads

TORCH_NAMES = ("NCAStream", "stream_loader", "distributed_rank", "EvenSplit", "even_split",
               "load_rank_stream")  # in ncagen.torch_stream


def __getattr__(name: str):
    """`NCAStream`, `stream_loader`, `load_rank_stream` and their helpers need torch: they live in
    ncagen.torch_stream and are imported from there on first use, so this module does not."""
    if name in TORCH_NAMES:
        from .extras import require

        require("torch", "train", f"ncagen.stream.{name}")
        from . import torch_stream

        return getattr(torch_stream, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def shard_tasks(cfg: NCAConfig, band: Band | Mix, seed: int, shard_rows: int, rows: int | None = None,
                split: str = "train", start_shard: int = 0) -> Iterator[ShardTask]:
    """The shards of a split in build order; endless when rows is None."""
    count = math.ceil(rows / shard_rows) if rows is not None else 0  # 0: unbounded
    i = start_shard
    while rows is None or i < count:
        n = shard_rows if rows is None else min(shard_rows, rows - i * shard_rows)
        yield ShardTask(cfg, band, name_of(band, cfg), split, i, count, n,
                        shard_key(seed, cfg.states, band, split, i))
        i += 1


def row_dicts(cols: dict, cfg: NCAConfig, band_names: str | list[str]) -> Iterator[dict]:
    """Column batches from the generator -> one dict per row, with the dataset's columns
    (`band_names`: as `shards.to_table` takes them)."""
    from .shards import band_column

    bands = band_column(cols, band_names)
    for j in range(len(cols["rule_seed"])):
        yield {
            "input_ids": cols["input_ids"][j],  # (seq_len,) int32
            "gzip_ratio": float(cols["gzip_ratio"][j]),
            "zstd_ratio": float(cols["zstd_ratio"][j]),
            "states": cfg.states,
            "band": bands[j],
            "rule_seed": int(cols["rule_seed"][j]),
            "sim": int(cols["sim"][j]),
        }


def even_quotas(shard_rows: list[int], world_size: int, workers: int) -> list[int]:
    """Rows each DataLoader worker position yields on every rank, shard i going to consumer
    i % (world_size * workers) = rank * workers + worker: the fewest any rank's worker holds."""
    consumers = world_size * workers
    held = [sum(shard_rows[c::consumers]) for c in range(consumers)]
    return [min(held[r * workers + w] for r in range(world_size)) for w in range(workers)]


def check_args(band: Band | Mix | str, rows: int | None, shard_rows: int | None, seed: int, split: str,
               start_shard: int) -> Band | Mix:
    """Validate a stream's arguments; returns the band (or mixture) parsed. shard_rows None is
    the default (`plan.stream_shard_rows`)."""
    band = parse_partition(band) if isinstance(band, str) else band
    if rows is not None and rows < 1:
        raise ConfigError(f"rows must be >= 1 or None (endless), got {rows}")
    if shard_rows is not None and shard_rows < 1:
        raise ConfigError(f"shard_rows must be >= 1, got {shard_rows}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if start_shard < 0:
        raise ConfigError(f"start_shard must be >= 0, got {start_shard}")
    return band


def loader_worker():
    """torch's DataLoader worker info in a DataLoader worker, else None. Outside torch there are
    no such workers, so torch is looked up, never imported: a worker has imported it already."""
    torch = sys.modules.get("torch")
    return torch.utils.data.get_worker_info() if torch is not None else None


def worker_setup(threads: int) -> None:
    """Prepare a DataLoader worker process for generation, `threads` threads of it.

    (ncagen.threads drops the thread pools a fork copied.) numba gets its own work-queue pool
    instead of OpenMP, which cannot run in a child forked from a process that used it (torch
    does).
    """
    import numba

    numba.config.THREADING_LAYER = "workqueue"  # no effect if the parent already started a pool
    limit_threads(threads)


def nca_generator(shards: list[int], cfg: NCAConfig, band: Band | Mix | str, seed: int = 0,
                  rows: int | None = None, shard_rows: int | None = None,
                  split: str = "train", device: str = "cpu",
                  batch: int = DEFAULT_BATCH) -> Iterator[dict]:
    """Rows of the given shard indices, in order, for datasets.IterableDataset.from_generator."""
    from .threads import default_workers

    band = check_args(band, rows, shard_rows, seed, split, 0)
    shard_rows = stream_shard_rows(shard_rows, rows, cfg.seq_len, split)
    from .rollout import resolve_device

    device = resolve_device(device)  # auto -> cuda or cpu, as NCAStream does
    info = loader_worker()
    if info is not None:
        worker_setup(max(1, default_workers() // info.num_workers))
    for i in shards:
        n = shard_rows if rows is None else min(shard_rows, rows - i * shard_rows)
        if n < 1:
            raise ConfigError(f"shard {i} lies beyond the {rows} rows of this stream")
        task = ShardTask(cfg, band, name_of(band, cfg), split, i, 0, n,
                         shard_key(seed, cfg.states, band, split, i))
        for cols in generate_parts(cfg, task.components(), device, batch):
            yield from row_dicts(cols, cfg, task.band_names())


def nca_iterable_dataset(cfg: NCAConfig, band: Band | Mix | str, seed: int = 0, rows: int | None = None,
                         shard_rows: int | None = None, split: str = "train",
                         num_shards: int | None = None, device: str = "cpu"):
    """A datasets.IterableDataset of the stream; shards split over workers and nodes by datasets."""
    import datasets

    if (rows is None) == (num_shards is None):
        raise ConfigError("give exactly one of rows or num_shards (datasets needs a shard list)")
    check_args(band, rows, shard_rows, seed, split, 0)
    shard_rows = stream_shard_rows(shard_rows, rows, cfg.seq_len, split)
    count = math.ceil(rows / shard_rows) if rows is not None else num_shards
    listed = getattr(datasets, "List", None) or datasets.Sequence  # datasets < 4 has no List
    features = datasets.Features({
        "input_ids": listed(datasets.Value("int32")),
        "gzip_ratio": datasets.Value("float32"), "zstd_ratio": datasets.Value("float32"),
        "states": datasets.Value("int32"), "band": datasets.Value("string"),
        "rule_seed": datasets.Value("int64"), "sim": datasets.Value("int32")})
    return datasets.IterableDataset.from_generator(
        nca_generator, features=features,
        gen_kwargs={"shards": list(range(count)), "cfg": cfg, "band": str(band), "seed": seed,
                    "rows": rows, "shard_rows": shard_rows, "split": split, "device": device})


def manifest_file_rows(path: str, config_name: str, split: str,
                       revision: str | None = None) -> list[int]:
    """Rows of each Parquet file of a config's split, in file order, from the build's manifest
    (ncagen.json, beside the data in a build and in the Hub repo)."""
    import json

    from .shards import MANIFEST

    if os.path.isdir(path):
        with open(os.path.join(path, MANIFEST), encoding="utf-8") as fh:
            manifest = json.load(fh)
    else:
        from huggingface_hub import hf_hub_download

        local = hf_hub_download(path, MANIFEST, repo_type="dataset", revision=revision)
        with open(local, encoding="utf-8") as fh:
            manifest = json.load(fh)
    prefix = f"data/{config_name}/{split}-"
    rows = [e["rows"] for p, e in sorted(manifest["shards"].items()) if p.startswith(prefix)]
    if not rows:
        raise ConfigError(f"{path} has no {split} files for config {config_name!r}")
    return rows


def read_build(path: str, config_name: str) -> dict:
    """A built partition's generation parameters from its manifest: cfg, band, seed, rows,
    shard_rows (as recorded) and split_shard_rows (rows per file of each split)."""
    from .shards import read_manifest

    manifest = read_manifest(path)
    if manifest is None:
        raise ConfigError(f"{path} holds no ncagen build (no manifest)")
    ident = manifest["config"]
    pairs = recorded_partitions(ident)
    sizes = ident["shard_rows"]  # an integer, or per split (--shard-rows auto)
    split_rows = sizes if isinstance(sizes, dict) else {"train": sizes, "validation": sizes}
    names = []
    for n, band in pairs:
        cfg = NCAConfig(**{**ident["nca"], "states": n})
        if name_of(band, cfg) == config_name:
            return {"cfg": cfg, "band": band, "seed": ident["seed"], "shard_rows": sizes,
                    "split_shard_rows": split_rows,
                    "rows": {"train": ident["train_rows"], "validation": ident["validation_rows"]}}
        names.append(name_of(band, cfg))
    raise ConfigError(f"config {config_name!r} is not in the build at {path}; it has {', '.join(names)}")

