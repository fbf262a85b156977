"""One shard, start to finish, wherever it runs: size the threads, pick the device, generate the
rows, write the Parquet file atomically. The same function is a Ray task and the local loop.

Resources are decided where the work runs, not when the job starts: on a Ray node a CPU task
uses the CPUs it was given, and a GPU task uses its node's CPUs per GPU for gzip (the GPU does
the rollouts), so a GPU node that an autoscaler adds mid-build is used fully.
"""

from __future__ import annotations

import time

import numpy as np

from .plan import ShardTask

GPU_BATCH = 32_768  # a GPU needs far larger batches than the CPU engine to be busy


class DeviceError(RuntimeError):
    """The device the build asked for is not there."""


def node_threads(gpu: bool) -> tuple[int, str]:
    """(threads, node id) for a Ray task: its CPUs, or on a GPU node the node's CPUs per GPU."""
    import ray

    ctx = ray.get_runtime_context()
    node_id = ctx.get_node_id()
    if not gpu:
        return max(1, int(ctx.get_assigned_resources().get("CPU", 1))), node_id
    node = next((n for n in ray.nodes() if n.get("NodeID") == node_id), {})
    res = node.get("Resources", {})
    return max(1, int(res.get("CPU", 1) // max(res.get("GPU", 1), 1))), node_id


def pick_device(device: str, fallback: bool, where: str = "this machine") -> str:
    """The device to roll out on: `device`, or "cpu" if it is CUDA, none is visible and
    `fallback` allows it (--device auto); else DeviceError."""
    if device == "cpu":
        return "cpu"
    from .rollout import resolve_device

    try:
        return resolve_device(device)
    except ValueError:
        if fallback:
            return "cpu"
        raise DeviceError(f"--device {device}: no CUDA GPU is visible on {where}") from None


def run_shard(task: ShardTask, out: str, device: str = "cpu", batch: int | None = None,
              threads: int | None = None, report=None, fallback: bool = False,
              in_ray: bool = False, width=None, defer: bool = False):
    """Generate one shard and write it atomically to `out`; returns its record.

    `report(rows_so_far)` is called as rows are made. In a Ray task (`in_ray`) threads come from
    the node unless given; `fallback` lets a CUDA request run on the CPU where no GPU is visible.
    `width()` may raise the CPU thread count while the shard runs (see `generate.generate`).
    With `defer`, returns a function that publishes the file (the upload to an object store)
    and returns the record, so the next shard can be generated meanwhile.
    """
    from . import __version__, shards
    from .generate import DEFAULT_BATCH, ShardStats, generate_parts
    from .progress import RowReporter
    from .storage import Storage

    node = ""
    if in_ray and threads is None:
        threads, node = node_threads(gpu=device != "cpu")
    where = f"Ray node {node[:12]}" if node else "this machine"
    device = pick_device(device, fallback, where)
    batch = batch or (GPU_BATCH if device.startswith("cuda") else DEFAULT_BATCH)
    store = Storage(out)
    stats, t0 = ShardStats(), time.perf_counter()
    tell = RowReporter(report) if report is not None else None
    counts = np.zeros(task.nca.vocab_size, np.int64)  # every token id's count, for the card

    def tables():
        names = task.band_names()  # a mixture's rows carry their own band's name
        for cols in generate_parts(task.nca, task.components(), device, batch, stats,
                                   threads=threads, width=width):
            if tell is not None:
                tell(len(cols["rule_seed"]))
            counts[:] += np.bincount(cols["input_ids"].reshape(-1), minlength=counts.size)
            yield shards.to_table(cols, task.nca, names)

    meta = lambda: {"tokens": task.rows * task.nca.seq_len, "candidates": stats.candidates,  # noqa: E731
                    "accepted": stats.accepted, "key": str(task.key), "version": __version__,
                    "token_counts": shards.pack_counts(counts)}
    written = shards.write_shard(store, task.path, tables(), shards.schema(task.nca), meta,
                                 defer=defer)
    seconds = time.perf_counter() - t0

    def record() -> dict:
        result = written() if defer else written
        result.seconds = round(seconds, 3)  # generating and writing; not a deferred upload
        widest = max(threads or 0, width() if width is not None else 0)  # threads at the end
        return {**result.to_dict(), "device": device, "threads": widest, "node": node}

    return record if defer else record()
