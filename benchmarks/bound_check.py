"""The gzip-skip bound on many real candidates: soundness, how much it skips, what it saves.

    python benchmarks/bound_check.py [--candidates 2000000] [--states 10 --states 15 ...]

For each alphabet, rolls out `--candidates` random rules (the generator's own candidates, in
units of 8,192), takes the exact gzip size of every one and the periodic-tail bound
(`ncagen.complexity.periodic_size_bound`), and reports: violations (bound below the exact size:
must be 0), the smallest slack, the share of candidates each band's low edge lets the filter
skip next to the share that is truly at or below it, and the time of the bound against gzip.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

LOWS = (0.2, 0.3, 0.4, 0.5)
UNIT = 8192


def main() -> int:
    from ncagen.complexity import gzip_ratios, periodic_size_bound
    from ncagen.config import NCAConfig
    from ncagen.generate import candidate_seeds, rollout_tokens

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=2_000_000)
    ap.add_argument("--states", type=int, action="append")
    ap.add_argument("--temperature", type=float, default=None)
    args = ap.parse_args()
    bad = 0
    for states in args.states or [10]:
        cfg = NCAConfig(states=states, **({"temperature": args.temperature}
                                          if args.temperature else {}))
        n = cfg.ratio_grids * (cfg.grid // cfg.patch) ** 2 * 4
        seen = violations = 0
        slack = np.iinfo(np.int64).max
        skip, below = np.zeros(len(LOWS)), np.zeros(len(LOWS))
        t_bound = t_gzip = 0.0
        start = 0
        while seen < args.candidates:
            count = min(UNIT, args.candidates - seen)
            seeds, sims = candidate_seeds(0xB0B + states, start, count, 1)
            head, _, _ = rollout_tokens(cfg, seeds, sims, cfg.ratio_grids)
            t0 = time.perf_counter()
            bound = periodic_size_bound(head)
            t1 = time.perf_counter()
            ratios = gzip_ratios(head, cfg.gzip_level)
            t2 = time.perf_counter()
            t_bound, t_gzip = t_bound + t1 - t0, t_gzip + t2 - t1
            exact = np.rint(ratios.astype(np.float64) * n).astype(np.int64)
            violations += int((bound < exact).sum())
            slack = min(slack, int((bound - exact).min()))
            br = (bound / n).astype(np.float32)
            for i, lo in enumerate(LOWS):
                skip[i] += int((br <= np.float32(lo)).sum())
                below[i] += int((ratios <= np.float32(lo)).sum())
            seen += count
            start += count
        bad += violations
        shares = ", ".join(f"lo {lo}: skips {s / seen:.1%} of {b / seen:.1%} at or below"
                           for lo, s, b in zip(LOWS, skip, below))
        print(f"n={states}: {seen:,} candidates, violations {violations}, smallest slack "
              f"{slack} bytes; {shares}; bound {t_bound / seen * 1e6:.2f} us, gzip "
              f"{t_gzip / seen * 1e6:.2f} us a candidate (all cores)", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
