"""On-the-fly NCA rows for training: the rows a build would write, generated live, no files.

`NCAStream` is a torch `IterableDataset` over the shards a build with the same (config, band,
seed, shard_rows) plans: shard i of a split has the key `build.plan` gives it, and its rows are
`generate.generate`'s output for that key, so a stream and a build yield the same rows, shard by
shard, in the same order. A stream is infinite by default (it keeps going over shard indices
0, 1, 2, ...) or bounded (`rows=N`, the rows of a build with `--rows N`).

Shards are dealt round-robin over every consumer, (rank, DataLoader worker): shard i goes to
consumer i % (world_size * num_workers), so no row is yielded twice. Keep shards small enough
that every consumer gets some (`shard_rows`), since the rows of one shard come out of one
consumer.

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

`nca_generator` is the same thing as a plain generator function for
`datasets.IterableDataset.from_generator`, whose list-valued `shards` argument `datasets`
splits over workers and nodes itself; `nca_iterable_dataset` wires it up.

In a DataLoader worker the stream takes its share of the cores, drops the thread pools a fork
copied from the parent (their threads did not come along) and keeps numba off OpenMP, which
breaks in a child forked from a process that used it. `stream_loader` goes further and starts
workers from a fresh forkserver process, which inherits nothing.
"""

from __future__ import annotations

import itertools
import math
import os
from typing import Iterator

import torch

from .plan import DEFAULT_SHARD_ROWS, SPLITS, ShardTask, shard_key
from .config import Band, ConfigError, NCAConfig
from .generate import DEFAULT_BATCH, generate


def shard_tasks(cfg: NCAConfig, band: Band, seed: int, shard_rows: int, rows: int | None = None,
                split: str = "train", start_shard: int = 0) -> Iterator[ShardTask]:
    """The shards of a split in build order; endless when rows is None."""
    count = math.ceil(rows / shard_rows) if rows is not None else 0  # 0: unbounded
    i = start_shard
    while rows is None or i < count:
        n = shard_rows if rows is None else min(shard_rows, rows - i * shard_rows)
        yield ShardTask(cfg, band, band.name(cfg.states), split, i, count, n,
                        shard_key(seed, cfg.states, band, split, i))
        i += 1


def row_dicts(cols: dict, cfg: NCAConfig, band_name: str) -> Iterator[dict]:
    """Column batches from the generator -> one dict per row, with the dataset's columns."""
    for j in range(len(cols["rule_seed"])):
        yield {
            "input_ids": cols["input_ids"][j],  # (seq_len,) int32
            "gzip_ratio": float(cols["gzip_ratio"][j]),
            "zstd_ratio": float(cols["zstd_ratio"][j]),
            "states": cfg.states,
            "band": band_name,
            "rule_seed": int(cols["rule_seed"][j]),
            "sim": int(cols["sim"][j]),
        }


def even_quotas(shard_rows: list[int], world_size: int, workers: int) -> list[int]:
    """Rows each DataLoader worker position yields on every rank, shard i going to consumer
    i % (world_size * workers) = rank * workers + worker: the fewest any rank's worker holds."""
    consumers = world_size * workers
    held = [sum(shard_rows[c::consumers]) for c in range(consumers)]
    return [min(held[r * workers + w] for r in range(world_size)) for w in range(workers)]


def distributed_rank() -> tuple[int, int]:
    """(rank, world_size) from torch.distributed when initialised, else RANK/WORLD_SIZE, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _check(band: Band | str, rows: int | None, shard_rows: int, seed: int, split: str,
           start_shard: int) -> Band:
    """Validate a stream's arguments; returns the band parsed."""
    band = Band.parse(band) if isinstance(band, str) else band
    if rows is not None and rows < 1:
        raise ConfigError(f"rows must be >= 1 or None (endless), got {rows}")
    if shard_rows < 1:
        raise ConfigError(f"shard_rows must be >= 1, got {shard_rows}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if start_shard < 0:
        raise ConfigError(f"start_shard must be >= 0, got {start_shard}")
    return band


class NCAStream(torch.utils.data.IterableDataset):
    """The rows of a build, generated live and dealt shard by shard over ranks and workers."""

    def __init__(self, cfg: NCAConfig, band: Band | str, seed: int = 0, *, rows: int | None = None,
                 shard_rows: int = DEFAULT_SHARD_ROWS, split: str = "train", start_shard: int = 0,
                 rank: int | None = None, world_size: int | None = None, even_ranks: bool = True,
                 device: str = "cpu", batch: int = DEFAULT_BATCH, threads: int | None = None):
        super().__init__()
        self.band = _check(band, rows, shard_rows, seed, split, start_shard)
        if (rank is None) != (world_size is None):
            raise ConfigError("give both rank and world_size, or neither")
        if rank is None:
            rank, world_size = distributed_rank()
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
        self.cfg, self.seed, self.rows, self.shard_rows = cfg, seed, rows, shard_rows
        self.split, self.start_shard, self.rank, self.world_size = split, start_shard, rank, world_size
        self.even_ranks, self.device, self.batch, self.threads = even_ranks, device, batch, threads

    @classmethod
    def from_build(cls, path: str, config_name: str, split: str = "train", **kwargs) -> "NCAStream":
        """A stream of a built partition's rows (kwargs override, e.g. rows=None to go on forever)."""
        spec = read_build(path, config_name)
        if "rows" not in kwargs:
            if not spec["rows"][split]:
                raise ConfigError(f"the build at {path} has no {split} rows")
            kwargs["rows"] = spec["rows"][split]
        kwargs.setdefault("shard_rows", spec["shard_rows"])
        return cls(spec["cfg"], spec["band"], spec["seed"], split=split, **kwargs)

    def tasks(self) -> Iterator[ShardTask]:
        """Every shard of this stream in build order, before dealing to consumers."""
        return shard_tasks(self.cfg, self.band, self.seed, self.shard_rows, self.rows,
                           self.split, self.start_shard)

    def quotas(self, workers: int = 1) -> list[int] | None:
        """Rows each DataLoader worker yields on every rank (of `workers` per rank); None when
        the stream is endless or not evened out over ranks."""
        if self.rows is None or not self.even_ranks:
            return None
        return even_quotas([t.rows for t in self.tasks()], self.world_size, workers)

    def consumer(self) -> tuple[int, int]:
        """(this consumer's index, number of consumers) over all ranks and DataLoader workers."""
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * workers + worker, self.world_size * workers

    def __iter__(self) -> Iterator[dict]:
        from .threads import default_workers
        from .rollout import resolve_device

        me, consumers = self.consumer()
        workers = consumers // self.world_size
        quotas = self.quotas(workers)
        if quotas is not None and not any(quotas):
            raise ConfigError(
                f"rank {self.world_size - 1} of {self.world_size} would get no rows: the "
                f"{len(list(self.tasks()))} shards of {self.shard_rows} rows cannot reach all "
                f"{consumers} consumers (ranks x DataLoader workers); lower shard_rows to at most "
                f"{max(1, self.rows // consumers)}, or pass even_ranks=False")
        device = resolve_device(self.device)
        info = torch.utils.data.get_worker_info()
        if info is not None:  # a DataLoader worker gets its share of the cores
            _worker_setup(self.threads or max(1, default_workers() // info.num_workers))
        elif self.threads:
            _limit_threads(self.threads)
        rows = self._rows(me, consumers, device)
        yield from rows if quotas is None else itertools.islice(rows, quotas[me % workers])

    def _rows(self, me: int, consumers: int, device) -> Iterator[dict]:
        """Every row of the shards dealt to consumer `me`, generated shard by shard."""
        for task in self.tasks():
            if (task.index - self.start_shard) % consumers != me:
                continue
            for cols in generate(task.nca, task.band, task.key, task.rows, device, self.batch):
                yield from row_dicts(cols, task.nca, task.config_name)


def _worker_setup(threads: int) -> None:
    """Prepare a DataLoader worker process for generation, `threads` threads of it.

    (ncagen.threads drops the thread pools a fork copied.) numba gets its own work-queue pool
    instead of OpenMP, which cannot run in a child forked from a process that used it (torch
    does).
    """
    import numba

    numba.config.THREADING_LAYER = "workqueue"  # no effect if the parent already started a pool
    _limit_threads(threads)


def _limit_threads(threads: int) -> None:
    """Cap this process's generation threads (numba's count, which the CPU engine follows, and
    the compression pool)."""
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by ncagen.threads.default_workers


def stream_loader(dataset, batch_size: int, num_workers: int = 0, **kwargs):
    """A DataLoader over a stream whose workers start fork-safe for numba (a forkserver)."""
    import multiprocessing

    if num_workers > 0 and "multiprocessing_context" not in kwargs:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["ncagen.stream"])  # workers fork from a warm server
        kwargs["multiprocessing_context"] = ctx
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                       **kwargs)


def nca_generator(shards: list[int], cfg: NCAConfig, band: Band | str, seed: int = 0,
                  rows: int | None = None, shard_rows: int = DEFAULT_SHARD_ROWS,
                  split: str = "train", device: str = "cpu",
                  batch: int = DEFAULT_BATCH) -> Iterator[dict]:
    """Rows of the given shard indices, in order, for datasets.IterableDataset.from_generator."""
    from .threads import default_workers

    band = _check(band, rows, shard_rows, seed, split, 0)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        _worker_setup(max(1, default_workers() // info.num_workers))
    for i in shards:
        n = shard_rows if rows is None else min(shard_rows, rows - i * shard_rows)
        if n < 1:
            raise ConfigError(f"shard {i} lies beyond the {rows} rows of this stream")
        key = shard_key(seed, cfg.states, band, split, i)
        for cols in generate(cfg, band, key, n, device, batch):
            yield from row_dicts(cols, cfg, band.name(cfg.states))


def nca_iterable_dataset(cfg: NCAConfig, band: Band | str, seed: int = 0, rows: int | None = None,
                         shard_rows: int = DEFAULT_SHARD_ROWS, split: str = "train",
                         num_shards: int | None = None, device: str = "cpu"):
    """A datasets.IterableDataset of the stream; shards split over workers and nodes by datasets."""
    import datasets

    if (rows is None) == (num_shards is None):
        raise ConfigError("give exactly one of rows or num_shards (datasets needs a shard list)")
    count = math.ceil(rows / shard_rows) if rows is not None else num_shards
    features = datasets.Features({
        "input_ids": datasets.List(datasets.Value("int32")),
        "gzip_ratio": datasets.Value("float32"), "zstd_ratio": datasets.Value("float32"),
        "states": datasets.Value("int32"), "band": datasets.Value("string"),
        "rule_seed": datasets.Value("int64"), "sim": datasets.Value("int32")})
    return datasets.IterableDataset.from_generator(
        nca_generator, features=features,
        gen_kwargs={"shards": list(range(count)), "cfg": cfg, "band": str(band), "seed": seed,
                    "rows": rows, "shard_rows": shard_rows, "split": split, "device": device})


def even_split(ds, rank: int, world_size: int, file_rows: list[int]) -> "EvenSplit":
    """Rank `rank`'s part of a streamed `datasets.IterableDataset` whose files hold
    `file_rows` rows (in the stream's file order), the same length on every rank."""
    return EvenSplit(ds, rank, world_size, file_rows)


def load_rank_stream(path: str, config_name: str, split: str = "train", *, rank: int | None = None,
                     world_size: int | None = None, revision: str | None = None,
                     **kwargs) -> "EvenSplit":
    """`load_dataset(path, config_name, split=split, streaming=True)` split over ranks, every
    rank the same rows; rank and world_size default as in `ncagen.stream.distributed_rank`."""
    import datasets

    if (rank is None) != (world_size is None):
        raise ConfigError("give both rank and world_size, or neither")
    if rank is None:
        rank, world_size = distributed_rank()
    ds = datasets.load_dataset(path, config_name, split=split, streaming=True, revision=revision,
                               **kwargs)
    return even_split(ds, rank, world_size, manifest_file_rows(path, config_name, split, revision))


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


class EvenSplit(torch.utils.data.IterableDataset):
    """One rank's part of a streamed dataset, every rank and worker position yielding the same
    rows: a torch IterableDataset to hand to a DataLoader (any num_workers).

    `split_dataset_by_node` deals whole files round-robin over ranks when their number is a
    multiple of world_size, and otherwise gives each rank every world_size-th row of all files
    (every rank then reads every file); DataLoader workers get a rank's files round-robin in
    turn. From the files' row counts, each worker position is given the fewest rows any rank's
    worker at that position holds, and the rest is dropped: with files dealt, the short last
    file decides; with rows dealt, at most one row per rank and worker.
    """

    def __init__(self, ds, rank: int, world_size: int, file_rows: list[int]):
        from datasets.distributed import split_dataset_by_node

        super().__init__()
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
        if ds.num_shards != len(file_rows):
            raise ConfigError(f"the stream has {ds.num_shards} files, but {len(file_rows)} row "
                              "counts were given")
        self.rank, self.world_size, self.file_rows = rank, world_size, list(file_rows)
        self.strategy = "shards" if len(file_rows) % world_size == 0 else "examples"
        self.part = split_dataset_by_node(ds, rank, world_size, strategy=self.strategy)

    def quotas(self, workers: int = 1) -> list[int]:
        """Rows each of `workers` DataLoader workers yields, the same on every rank."""
        rows, n = self.file_rows, self.world_size
        if self.strategy == "examples":  # worker w reads files w, w+workers, ...; keeps 1 row in n
            return [sum(rows[w::workers]) // n for w in range(workers)]
        # rank r holds files r, r+n, ...; its worker w those of them at w, w+workers, ...
        held = [sum(rows[c::n * workers]) for c in range(n * workers)]
        return [min(held[r + n * w] for r in range(n)) for w in range(workers)]

    def rows(self, workers: int = 1) -> int:
        """Rows this rank yields with `workers` DataLoader workers (0 counts as 1)."""
        return sum(self.quotas(max(1, workers)))

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        quota = self.quotas(workers)[worker]
        got = 0
        for row in itertools.islice(self.part, quota):  # datasets picks this worker's files
            got += 1
            yield row
        if got < quota:
            raise RuntimeError(f"rank {self.rank} worker {worker} got {got} rows, {quota} were "
                               "due: datasets dealt the files otherwise than EvenSplit assumes")


def read_build(path: str, config_name: str) -> dict:
    """A built partition's generation parameters from its manifest: cfg, band, seed, shard_rows, rows."""
    from .shards import read_manifest

    manifest = read_manifest(path)
    if manifest is None:
        raise ConfigError(f"{path} holds no ncagen build (no manifest)")
    ident = manifest["config"]
    for n in ident["states"]:
        for text in ident["bands"]:
            band = Band.parse(text)
            if band.name(n) == config_name:
                cfg = NCAConfig(**{**ident["nca"], "states": n})
                return {"cfg": cfg, "band": band, "seed": ident["seed"],
                        "shard_rows": ident["shard_rows"],
                        "rows": {"train": ident["train_rows"], "validation": ident["validation_rows"]}}
    names = [Band.parse(b).name(n) for n in ident["states"] for b in ident["bands"]]
    raise ConfigError(f"config {config_name!r} is not in the build at {path}; it has {', '.join(names)}")

