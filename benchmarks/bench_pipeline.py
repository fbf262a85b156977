"""The device pipeline of `generate` against the serial loop it replaced, measured in one run.

    python benchmarks/bench_pipeline.py [--device cpu-device|torch-cpu|cuda ...] [--band 0.3-0.4]
                                        [--rows N] [--batch N] [--threads 1] [--repeat 2]

serial     the units one after another on one thread, as `generate` ran them on a device before
           the pipeline: head rollout, gzip ratios, tail rollout, zstd ratios, assembly; the
           time in rollouts (device) and in the rest (cpu) is taken apart. The rollouts are
           this version's (a head samples its rules on --threads cores; before the pipeline
           it used one), so the comparison isolates the pipeline
pipelined  `generate` itself on the same device, for the same rows: rollouts on the device
           thread, the rest on the unit thread
ideal      max(device, cpu): the best a two-stage pipeline can do
overlap    (serial - pipelined) / min(device, cpu): the share of the shorter stage hidden behind
           the longer one (1 = all of it, 0 = none)
left       what `generate` still had in flight when it returned (units started for rows it
           turned out not to need): not in the pipelined time, but it took device time from it
Both runs make the same rows (checked). By default both stand-in devices are measured, each
rollout stage on one core and the ratios on --threads (default 1), so on a 2-core machine each
stage has a core: rollout.CPU_DEVICE, the CPU kernel on one thread, whose rollouts cost about
as much as gzip, and rollout.TORCH_CPU, the torch engine (the CUDA code) on the CPU with
--torch-threads threads (default 1), which is far slower than gzip, so little can be hidden
there. `--device cuda` (with a GPU's batch, e.g. --batch 32768 --threads 16) measures the real
thing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]


def digest(batches) -> str:
    """sha256 of the rows: each column's rows concatenated (how they were batched is not part
    of the rows; near a shard's end the pipeline's units differ from the serial loop's)."""
    batches = list(batches)
    h = hashlib.sha256()
    for k in sorted(batches[0]):
        h.update(k.encode())
        h.update(np.concatenate([b[k] for b in batches]).tobytes())
    return h.hexdigest()[:16]


def serial(cfg, band, key: int, rows: int, batch: int, device: str, threads: int) -> dict:
    """The pre-pipeline loop: one unit at a time, every stage on this thread; returns the wall
    time, the part of it in rollouts and the rows' digest."""
    from concurrent.futures import Future

    from ncagen.generate import _filtered_rows, candidate_seeds

    rollout = 0.0

    def timed(fn, *args, **kwargs) -> Future:
        nonlocal rollout
        t0, future = time.perf_counter(), Future()
        future.set_result(fn(*args, **kwargs))
        rollout += time.perf_counter() - t0
        return future

    out, done, start, t0 = [], 0, 0, time.perf_counter()
    while done < rows:
        seeds, sims = candidate_seeds(key, start, batch, cfg.sims_per_rule)
        cols, _ = _filtered_rows(cfg, band, seeds, sims, device, threads, submit=timed)
        take = min(rows - done, len(cols["rule_seed"]))
        out.append({k: v[:take] for k, v in cols.items()})
        done, start = done + take, start + batch
    wall = time.perf_counter() - t0
    return dict(wall=wall, device=rollout, cpu=wall - rollout, units=start // batch,
                digest=digest(out))


def pipelined(cfg, band, key: int, rows: int, batch: int, device: str, threads: int) -> dict:
    """`generate` on the device; then waits for what it left in flight (not timed)."""
    from ncagen.generate import generate
    from ncagen.threads import pool

    t0 = time.perf_counter()
    batches = list(generate(cfg, band, key, rows, device, batch, threads=threads))
    wall = time.perf_counter() - t0
    for name in ("ncagen-unit", "ncagen-device"):  # drain, so the next run starts clean
        pool(1, name).submit(lambda: None).result()
    return dict(wall=wall, left=time.perf_counter() - t0 - wall, digest=digest(batches))


DEFAULTS = {"cpu-device": (1500, 1024), "torch-cpu": (200, 256)}  # device: (rows, batch)


def bench_device(device: str, args) -> bool:
    """Print `--repeat` serial / pipelined pairs on one device; False if their rows differ."""
    import torch

    from ncagen.config import Band, NCAConfig

    rows, batch = DEFAULTS.get(device, (50_000, 32_768))
    rows, batch = args.rows or rows, args.batch or batch
    extra = {} if args.temperature is None else {"temperature": args.temperature}
    cfg, band = NCAConfig(states=args.states, **extra), Band.parse(args.band)
    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "none"
    print(f"device {device} (GPU: {gpu}), {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} CPU threads), ratio threads {args.threads}; band {band}, "
          f"states {args.states}, temperature {cfg.temperature:g}, {rows} rows, batch {batch}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    serial(cfg, band, 12345, 1, min(batch, 64), device, args.threads)  # warm up
    for r in range(args.repeat):
        key = 1000 + r
        s = serial(cfg, band, key, rows, batch, device, args.threads)
        p = pipelined(cfg, band, key, rows, batch, device, args.threads)
        same = "same rows" if s["digest"] == p["digest"] else "ROWS DIFFER"
        hidden = (s["wall"] - p["wall"]) / max(min(s["device"], s["cpu"]), 1e-9)
        print(f"  run {r + 1}: {s['units']} units; serial {s['wall']:.2f} s (device "
              f"{s['device']:.2f} + cpu {s['cpu']:.2f}), pipelined {p['wall']:.2f} s (left "
              f"{p['left']:.2f}), ideal {max(s['device'], s['cpu']):.2f} s; speed-up "
              f"{s['wall'] / p['wall']:.3f}x, overlap {hidden:.2f} of the shorter stage; {same}; "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
        if s["digest"] != p["digest"]:
            return False
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", action="append",
                    help="cpu-device, torch-cpu or cuda[:i] (repeatable; default both stand-ins)")
    ap.add_argument("--band", default="0.3-0.4")
    ap.add_argument("--states", type=int, default=10)
    ap.add_argument("--temperature", type=float, default=None, help="default: the spec's")
    ap.add_argument("--rows", type=int, default=None, help="default: by device")
    ap.add_argument("--batch", type=int, default=None, help="default: by device")
    ap.add_argument("--threads", type=int, default=1, help="threads for the ratios (default 1)")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch's CPU threads for the torch-cpu stand-in (default 1)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import torch

    devices = args.device or list(DEFAULTS)
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        print("bench_pipeline: --device cuda needs a CUDA GPU and none is visible (the stand-ins "
              "cpu-device and torch-cpu run anywhere)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.torch_threads)  # this benchmark's own process: torch-cpu's core
    return 0 if all([bench_device(d, args) for d in devices]) else 1


if __name__ == "__main__":
    sys.exit(main())
