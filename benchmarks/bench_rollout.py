"""The CPU rollout kernel alone: this checkout's against a previous release's, same candidates.

    python benchmarks/bench_rollout.py --base DIR [--temperature 1e-4 --temperature 0.02]
                                       [--candidates 4096] [--steps 36] [--repeat 5]

DIR is a checkout of the previous release (e.g. `git worktree add /tmp/base <rev>`). Both
checkouts' `kernel_source` make the generated kernel for the spec's network (n = 10, 12 x 12),
compiled here without numba's cache; each then steps the same real candidates (fresh rules and
initial grids of one shard key) from t = 0 through `--steps` steps on one thread, recording
every grid from the burn-in on. Reported per temperature: the median of --repeat runs in us per
candidate, and the speed-up. The two kernels' grids are checked to be identical first (a
kernel that changed a row would be a bug, not a speed-up).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ncagen.config import NCAConfig  # noqa: E402
from ncagen.generate import candidate_seeds, fresh_candidates  # noqa: E402
from ncagen.rollout import NEAR_TIE, noise_keys  # noqa: E402


def _module(path: pathlib.Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compiled_kernel(checkout: pathlib.Path, tag: str, scratch: pathlib.Path, cfg: NCAConfig):
    """The kernel `checkout`'s ncagen.kernel generates for cfg's shape, compiled uncached."""
    # a name inside the package: since 0.3.4 kernel.py imports `.jit` (this checkout's serves)
    gen = _module(checkout / "ncagen" / "kernel.py", f"ncagen.bench_kernel_gen_{tag}")
    src = gen.kernel_source(cfg.states, cfg.conv_channels, cfg.hidden, cfg.grid, False, True, False)
    path = scratch / f"bench_kernel_{tag}.py"
    path.write_text(src.replace("cache=True", "cache=False"))
    return _module(path, f"bench_kernel_{tag}").kernel


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, type=pathlib.Path)
    ap.add_argument("--temperature", type=float, action="append")
    ap.add_argument("--candidates", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=36, help="36: the spec's 1,024-token row")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    import numba

    numba.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, numba {numba.__version__}; base {args.base}",
          flush=True)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="ncagen-bench-rollout-"))
    base_cfg = NCAConfig()
    kernels = {"base": compiled_kernel(args.base.resolve(), "base", scratch, base_cfg),
               "ours": compiled_kernel(REPO, "ours", scratch, base_cfg)}
    B = args.candidates
    seeds, sims = candidate_seeds(2026, 0, B, 1)
    params, state = fresh_candidates(base_cfg, seeds, sims, 1)
    keys = np.asarray(noise_keys(seeds, sims), np.uint64)
    T = params.offset_table()
    K = args.steps - base_cfg.burn_in + 1
    for tau in args.temperature or [base_cfg.temperature, 0.02]:
        thr = np.float32(NEAR_TIE * tau)
        times, digests = {}, {}
        for name, kernel in kernels.items():
            kernel(T, params.b1, params.w2, params.b2, params.w3, params.b3, state.copy(), keys,
                   0, args.steps, base_cfg.burn_in, 1, 0, np.zeros((B, K, 12, 12), np.uint8), tau,
                   thr, np.float32(0), 0, 64)  # compile
            runs = []
            for _ in range(args.repeat):
                out = np.zeros((B, K, 12, 12), np.uint8)
                st = state.copy()
                t0 = time.perf_counter()
                kernel(T, params.b1, params.w2, params.b2, params.w3, params.b3, st, keys, 0,
                       args.steps, base_cfg.burn_in, 1, 0, out, tau, thr, np.float32(0), 0, B)
                runs.append(time.perf_counter() - t0)
            times[name] = statistics.median(runs) / B * 1e6
            digests[name] = hashlib.sha256(out.tobytes() + st.tobytes()).hexdigest()
        assert digests["base"] == digests["ours"], f"the kernels' grids differ at tau {tau}"
        print(f"temperature {tau:g}, {B:,} candidates x {args.steps} steps, one thread: base "
              f"{times['base']:.1f} us, ours {times['ours']:.1f} us per candidate = "
              f"{times['base'] / times['ours']:.2f}x (grids identical)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
