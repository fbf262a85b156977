"""The on-the-fly stream as a torch `IterableDataset` (`NCAStream`) and a fork-safe DataLoader
over it (`stream_loader`); the rows and their dealing are `ncagen.stream`'s. Needs torch
(`pip install "ncagen[train]"`); `from ncagen.stream import NCAStream` imports it from here.
"""

from __future__ import annotations

import itertools
import os
from typing import Iterator

import torch

from .config import Band, ConfigError, Mix, NCAConfig
from .generate import DEFAULT_BATCH, generate_parts
from .plan import ShardTask, stream_shard_rows
from .stream import (check_args, even_quotas, manifest_file_rows, read_build, row_dicts,
                     shard_tasks, worker_setup)
from .threads import limit_threads


def distributed_rank() -> tuple[int, int]:
    """(rank, world_size) from torch.distributed when initialised, else RANK/WORLD_SIZE, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class NCAStream(torch.utils.data.IterableDataset):
    """The rows of a build, generated live and dealt shard by shard over ranks and workers."""

    def __init__(self, cfg: NCAConfig, band: Band | Mix | str, seed: int = 0, *, rows: int | None = None,
                 shard_rows: int | None = None, split: str = "train", start_shard: int = 0,
                 rank: int | None = None, world_size: int | None = None, even_ranks: bool = True,
                 device: str = "cpu", batch: int = DEFAULT_BATCH, threads: int | None = None):
        super().__init__()
        self.band = check_args(band, rows, shard_rows, seed, split, start_shard)
        if (rank is None) != (world_size is None):
            raise ConfigError("give both rank and world_size, or neither")
        if rank is None:
            rank, world_size = distributed_rank()
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
        shard_rows = stream_shard_rows(shard_rows, rows, cfg.seq_len, split)  # as a build cuts it
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
        kwargs.setdefault("shard_rows", spec["split_shard_rows"][split])
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
            worker_setup(self.threads or max(1, default_workers() // info.num_workers))
        elif self.threads:
            limit_threads(self.threads)
        rows = self._rows(me, consumers, device)
        yield from rows if quotas is None else itertools.islice(rows, quotas[me % workers])

    def _rows(self, me: int, consumers: int, device) -> Iterator[dict]:
        """Every row of the shards dealt to consumer `me`, generated shard by shard."""
        for task in self.tasks():
            if (task.index - self.start_shard) % consumers != me:
                continue
            for cols in generate_parts(task.nca, task.components(), device, self.batch):
                yield from row_dicts(cols, task.nca, task.band_names())


def stream_loader(dataset, batch_size: int, num_workers: int = 0, **kwargs):
    """A DataLoader over a stream whose workers start fork-safe for numba (a forkserver)."""
    import multiprocessing

    if num_workers > 0 and "multiprocessing_context" not in kwargs:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["ncagen.torch_stream"])  # workers fork from a warm server
        kwargs["multiprocessing_context"] = ctx
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                       **kwargs)


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
