"""Thread pools shared by the generator's stages (rollout, rows, compression; on a device, the
device thread and the unit thread of the pipeline), fork-safe.

numba kernels, zlib and zstandard release the GIL, so plain threads keep every core busy. A
process forked from one that used a pool (a DataLoader worker) inherits the pool without its
threads, and work sent to it would wait forever: the cache is cleared in every forked child.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

_POOLS: dict[tuple[int, str], ThreadPoolExecutor] = {}


def pool(workers: int, name: str) -> ThreadPoolExecutor:
    """The process's pool of `workers` threads for one stage (pools of different stages nest)."""
    key = (workers, name)
    if key not in _POOLS:  # a pool starts no thread before its first task: a racing twin is free
        _POOLS.setdefault(key, ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name))
    return _POOLS[key]


def close_pools() -> None:
    """Shut down the pools this process made (each first finishes the work it holds)."""
    for executor in list(_POOLS.values()):
        executor.shutdown(wait=True)
    _POOLS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOLS.clear)


def default_workers() -> int:
    """Threads for CPU work: OMP_NUM_THREADS if set (a Ray task's CPUs), else every core."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def limit_threads(threads: int) -> None:
    """Cap this process's generation threads (numba's count, which the CPU engine follows, and
    the compression pool's, `default_workers`)."""
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    os.environ["OMP_NUM_THREADS"] = str(threads)
