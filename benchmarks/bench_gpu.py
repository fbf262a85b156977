"""Throughput of the torch rollout engine on a GPU: candidates/s and tokens/s at a GPU's batch.

    python benchmarks/bench_gpu.py [--device cuda] [--batch 32768] [--states 10]
                                   [--temperature 1e-4 --temperature 0.02] [--repeat 3] [--compile] [--fused]

For each temperature, `--repeat` times (medians printed), on one batch of fresh candidates:
  head      `rollout_tokens` to the first ratio_grids grids, what every candidate costs before
            the gzip filter: rule sampling and initial grids (CPU, on every core, as the
            pipeline's device thread does), the rollout (device), patch tokens (CPU); as
            candidates/s
  prep      the rule sampling and initial grids alone (`generate.fresh_candidates`)
  step      `rollout.advance` alone over the same steps (the device's share), candidates/s
  sequence  `rollout_tokens` of whole sequences (grids_per_sequence), as tokens/s of rows
  compiled  with --compile: the step loop with the opt-in fused network
            (`rollout.compiled_network`, torch.compile), and whether its grids, and its logits
            of the first grids, equal the eager step's bit for bit (the compile itself happens
            in the warm-up, untimed)
  fused     with --fused: the same for the opt-in Triton kernel of `ncagen.gpu_kernel` (one
            launch a step; needs triton)
and the peak GPU memory. At temperature 0.02 most cells are near ties and take the Gumbel draw
(the spec's 1e-4 has few), so it is the engine's slow case. Without CUDA it exits with status 2
and says so; `--device torch-cpu` (rollout.TORCH_CPU, the same torch code on the CPU) with a
small batch checks the script itself anywhere.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def logits_equal(cfg, params, state, device: str, engine: str) -> bool:
    """Whether the `engine` network's logits of the grids `state` are the eager ones, bit for
    bit (a stricter test than the grids, which a 1-ulp difference rarely changes)."""
    import numpy as np
    import torch

    from ncagen.rollout import (TORCH_CPU, _neighbour_index, _network_torch,
                                compiled_network, near_tie_gap)

    dev = torch.device("cpu" if device == TORCH_CPU else device)
    weights = [torch.from_numpy(np.ascontiguousarray(a)).to(dev) for a in (
        params.offset_table(), params.b1, params.w2, params.b2, params.w3, params.b3)]
    cur = torch.from_numpy(state).to(dev).long().reshape(len(state), -1)  # (B, G*G)
    nbr = _neighbour_index(cfg.grid).to(dev)
    args = (*weights, cur, nbr, float(cfg.identity_bias))
    bits = lambda a, b: torch.equal(a.view(torch.int32), b.view(torch.int32))  # noqa: E731
    if engine == "compiled":
        return bits(compiled_network()(*args), _network_torch(*args))
    from ncagen.gpu_kernel import fused_step

    thr = float(near_tie_gap(cfg.temperature))
    step = fused_step(weights, nbr, cfg.states, cfg.grid, cfg.identity_bias, thr)
    return bits(step(cur)[0], _network_torch(*args))


def measure(cfg, batch: int, device: str, key: int, engines: tuple = ()) -> dict:
    """Seconds of the head, the bare step loop and whole sequences for one batch; for each of
    `engines` ("compiled", "fused"), of its step loop too and whether its grids and logits are
    the eager ones."""
    import numpy as np

    from ncagen.generate import candidate_seeds, fresh_candidates, rollout_tokens
    from ncagen.rollout import _advance_torch, advance, noise_keys
    from ncagen.threads import default_workers

    seeds, sims = candidate_seeds(key, 0, batch, cfg.sims_per_rule)
    R, K, cores = cfg.ratio_grids, cfg.grids_per_sequence, default_workers()
    head = timed(lambda: rollout_tokens(cfg, seeds, sims, R, device, threads=cores), device)
    t0 = time.perf_counter()
    params, state = fresh_candidates(cfg, seeds, sims, cores)
    prep, keys = time.perf_counter() - t0, noise_keys(seeds, sims)
    out = np.empty((batch, R, cfg.grid, cfg.grid), np.uint8)
    step = timed(lambda: advance(params, state, keys, 0, cfg.record_time(R - 1), cfg, out,
                                 device=device), device)
    whole = timed(lambda: rollout_tokens(cfg, seeds, sims, K, device, threads=cores), device)
    res = dict(head=head, prep=prep, step=step, whole=whole)
    for engine in engines:
        other = np.empty_like(out)
        res[engine] = timed(lambda: _advance_torch(params, state, keys, 0, cfg.record_time(R - 1),
                                                   cfg, other, 0, device, engine=engine), device)
        res[f"{engine}_equal"] = np.array_equal(out, other)
        res[f"{engine}_logits"] = logits_equal(cfg, params, state, device, engine)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda[:i] (default) or torch-cpu")
    ap.add_argument("--batch", type=int, default=32_768)
    ap.add_argument("--states", type=int, default=10)
    ap.add_argument("--temperature", type=float, action="append",
                    help="repeatable (default: the spec's 1e-4, then 0.02)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compile", action="store_true",
                    help="also time the opt-in compiled step and check it against the eager one")
    ap.add_argument("--fused", action="store_true",
                    help="also time the opt-in Triton step (ncagen.gpu_kernel) and check it")
    args = ap.parse_args(argv)
    engines = tuple(e for e, on in (("compiled", args.compile), ("fused", args.fused)) if on)
    sys.path.insert(0, str(REPO))
    import torch

    from ncagen.config import NCAConfig
    from ncagen.rollout import TORCH_CPU

    if args.device != TORCH_CPU and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        print(f"bench_gpu: --device {args.device} needs a visible CUDA GPU and there is none "
              f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use --device "
              f"{TORCH_CPU} with a small --batch to check the script on a CPU", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "none"
    print(f"device {args.device} (GPU: {gpu}), torch {torch.__version__}, {os.cpu_count()} cores; "
          f"batch {args.batch:,}, states {args.states}", flush=True)
    for tau in args.temperature or [NCAConfig().temperature, 0.02]:
        cfg = NCAConfig(states=args.states, temperature=tau)
        measure(cfg, min(args.batch, 256), args.device, 1, engines)  # warm up; compiles
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(args.device)
        runs = [measure(cfg, args.batch, args.device, 100 + r, engines)
                for r in range(args.repeat)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]
               if not k.endswith(("_equal", "_logits"))}
        peak = (torch.cuda.max_memory_allocated(args.device) / 2**30
                if args.device.startswith("cuda") else float("nan"))
        B, R, K = args.batch, cfg.ratio_grids, cfg.grids_per_sequence
        heads = ", ".join(f"{r['head']:.3f}" for r in runs)
        print(f"temperature {tau:g} (median of {args.repeat}; {R} grids a head, {K} a sequence):\n"
              f"  head      {med['head']:.3f} s  ->  {B / med['head']:,.0f} candidates/s\n"
              f"  prep      {med['prep']:.3f} s  (rules and initial grids on the cores)\n"
              f"  step      {med['step']:.3f} s  ->  {B / med['step']:,.0f} candidates/s "
              f"(device share {med['step'] / med['head']:.0%})\n"
              f"  sequence  {med['whole']:.3f} s  ->  {B * cfg.seq_len / med['whole'] / 1e6:.2f}M "
              f"tokens/s ({B / med['whole']:,.0f} rows/s)\n"
              f"  runs      head {heads} s; "
              f"peak GPU memory {peak:.2f} GiB", flush=True)
        yes = lambda key: "yes" if all(r[key] for r in runs) else "NO"  # noqa: E731
        for e in engines:
            print(f"  {e:<9} {med[e]:.3f} s  ->  {B / med[e]:,.0f} candidates/s "
                  f"({med['step'] / med[e]:.2f}x the eager step); equal to the eager "
                  f"step's: grids {yes(e + '_equal')}, logits {yes(e + '_logits')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
