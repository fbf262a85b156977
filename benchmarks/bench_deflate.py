"""ncagen's exact gzip-size kernel against zlib: the same sizes, and how much sooner.

    python benchmarks/bench_deflate.py [--candidates 1000000] [--states 10 --states 5 ...]

Real candidates of each alphabet (the ratio bytes of their first 10 grids, rolled out by the
generator), in chunks of 8,192: every size from `deflate.gzip_sizes` compared with zlib's
(`zlib.compress(data, 9, 31)`, the library behind `gzip.compress`), and the band bound checked
(a row it skips must lie outside the band by zlib's ratio). Times are one thread each, in the
same run: zlib, the exact kernel, and the kernel with the bound of each band.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ncagen import complexity, deflate  # noqa: E402
from ncagen.config import Band, NCAConfig  # noqa: E402
from ncagen.generate import candidate_seeds, rollout_tokens  # noqa: E402

BANDS = ((0.3, 0.4), (0.5, 1.0), (0.2, 0.3), (0.4, 0.5))
CHUNK = 8192


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=1_000_000, help="per alphabet")
    ap.add_argument("--states", type=int, action="append")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, zlib {zlib.ZLIB_RUNTIME_VERSION}", flush=True)
    deflate.gzip_sizes(np.zeros((1, 1440), np.uint8))  # compile (or load) the kernel first
    for states in args.states or [10]:
        cfg = NCAConfig(states=states)
        secs = {"zlib": 0.0, "exact": 0.0, **{f"{lo}-{hi}": 0.0 for lo, hi in BANDS}}
        skipped = {f"{lo}-{hi}": 0 for lo, hi in BANDS}
        done = mismatches = unsound = 0
        while done < args.candidates:
            n = min(CHUNK, args.candidates - done)
            seeds, sims = candidate_seeds(0xDEF1A7E + states, done, n, 1)
            tokens, _, _ = rollout_tokens(cfg, seeds, sims, cfg.ratio_grids)
            raw = complexity.ratio_bytes(tokens)
            t0 = time.perf_counter()
            ref = np.array([len(zlib.compress(r.tobytes(), 9, 31)) for r in raw], np.int64)
            secs["zlib"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            got = deflate.gzip_sizes(raw)
            secs["exact"] += time.perf_counter() - t0
            mismatches += int((got != ref).sum())
            ratios = (ref / raw.shape[1]).astype(np.float32)
            for lo, hi in BANDS:
                t0 = time.perf_counter()
                bounded = deflate.gzip_sizes(raw, 9, (lo, hi))
                secs[f"{lo}-{hi}"] += time.perf_counter() - t0
                out = bounded < 0
                skipped[f"{lo}-{hi}"] += int(out.sum())
                unsound += int((out & Band(lo, hi).mask(ratios)).sum())
                mismatches += int((bounded[~out] != ref[~out]).sum())
            done += n
        us = {k: v / done * 1e6 for k, v in secs.items()}
        print(f"states {states}: {done:,} candidates, sizes differing from zlib's: {mismatches}, "
              f"rows of a band the bound skipped: {unsound}", flush=True)
        print(f"  per candidate, one thread: zlib {us['zlib']:.1f} us, exact kernel "
              f"{us['exact']:.1f} us ({us['zlib'] / us['exact']:.2f}x)", flush=True)
        for lo, hi in BANDS:
            k = f"{lo}-{hi}"
            print(f"  band {k}: bound skips {skipped[k] / done:.1%} of candidates, "
                  f"{us[k]:.1f} us ({us['zlib'] / us[k]:.2f}x zlib)", flush=True)
        if mismatches or unsound:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
