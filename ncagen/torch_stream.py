"""The on-the-fly stream as a torch `IterableDataset` (`NCAStream`) and a fork-safe DataLoader
over it (`stream_loader`); the rows and their dealing are `ncagen.stream`'s. Needs torch
(`pip install "ncagen[train]"`); `from ncagen.stream import NCAStream` imports it from here.
"""

from __future__ import annotations

import os
from typing import Iterator

import torch

from .config import Band, ConfigError, NCAConfig
from .generate import DEFAULT_BATCH, generate
from .plan import DEFAULT_SHARD_ROWS, ShardTask
from .stream import check_args, limit_threads, read_build, row_dicts, shard_tasks, worker_setup


def distributed_rank() -> tuple[int, int]:
    """(rank, world_size) from torch.distributed when initialised, else RANK/WORLD_SIZE, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class NCAStream(torch.utils.data.IterableDataset):
    """The rows of a build, generated live and dealt shard by shard over ranks and workers."""

    def __init__(self, cfg: NCAConfig, band: Band | str, seed: int = 0, *, rows: int | None = None,
                 shard_rows: int = DEFAULT_SHARD_ROWS, split: str = "train", start_shard: int = 0,
                 rank: int | None = None, world_size: int | None = None, device: str = "cpu",
                 batch: int = DEFAULT_BATCH, threads: int | None = None):
        super().__init__()
        self.band = check_args(band, rows, shard_rows, seed, split, start_shard)
        if (rank is None) != (world_size is None):
            raise ConfigError("give both rank and world_size, or neither")
        if rank is None:
            rank, world_size = distributed_rank()
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
        self.cfg, self.seed, self.rows, self.shard_rows = cfg, seed, rows, shard_rows
        self.split, self.start_shard, self.rank, self.world_size = split, start_shard, rank, world_size
        self.device, self.batch, self.threads = device, batch, threads

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

    def consumer(self) -> tuple[int, int]:
        """(this consumer's index, number of consumers) over all ranks and DataLoader workers."""
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * workers + worker, self.world_size * workers

    def __iter__(self) -> Iterator[dict]:
        from .threads import default_workers
        from .rollout import resolve_device

        me, consumers = self.consumer()
        device = resolve_device(self.device)
        info = torch.utils.data.get_worker_info()
        if info is not None:  # a DataLoader worker gets its share of the cores
            worker_setup(self.threads or max(1, default_workers() // info.num_workers))
        elif self.threads:
            limit_threads(self.threads)
        for task in self.tasks():
            if (task.index - self.start_shard) % consumers != me:
                continue
            for cols in generate(task.nca, task.band, task.key, task.rows, device, self.batch):
                yield from row_dicts(cols, task.nca, task.config_name)


def stream_loader(dataset, batch_size: int, num_workers: int = 0, **kwargs):
    """A DataLoader over a stream whose workers start fork-safe for numba (a forkserver)."""
    import multiprocessing

    if num_workers > 0 and "multiprocessing_context" not in kwargs:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["ncagen.torch_stream"])  # workers fork from a warm server
        kwargs["multiprocessing_context"] = ctx
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                       **kwargs)
