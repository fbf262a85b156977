"""Fidelity of ncagen's gzip-ratio distribution (issue 2): the figures behind benchmarks/RESULTS.md.

For n in {5, 10, 15, 20} at the defaults, draws `--rows` unfiltered rows (band 0-1) from
ncagen and as many from tests/reference_nca.py (an independent literal implementation of
NCA_SPEC.md), and prints the two-sample Kolmogorov-Smirnov distance and p-value, quantiles and
band shares; for n = 10 also the spec's calibration table beside them. Then n = 2: the largest
ratio seen (the spec says about 0.25), and the CLI refusing the unreachable band 0.5-1.0.

    python benchmarks/fidelity.py [--rows 5000] [--seed 0] [--device cpu|cuda] [--binary-rows 20000]

`--device cuda` makes ncagen's rows with the torch engine on the GPU (the reference stays on
the CPU); the n = 2 build check then asks for `--device cuda` too.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import reference_nca  # noqa: E402
from ncagen.config import Band, NCAConfig  # noqa: E402
from ncagen.generate import DEFAULT_BATCH, ShardStats, generate  # noqa: E402
from ncagen.worker import GPU_BATCH  # noqa: E402

QUANTILES = (0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99)
SPEC_QUANTILES = (0.0222, 0.0243, 0.0299, 0.2736, 0.4764, 0.5660, 0.6042, 0.6202, 0.6417)
SPEC_ROWS = 5000
BANDS = ((0.0, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 1.0))
SPEC_SHARES = (0.268, 0.100, 0.178, 0.451)
FROZEN = np.float32(35 / 1440)


def ncagen_ratios(n: int, rows: int, seed: int, stats: ShardStats | None = None,
                  device: str = "cpu") -> np.ndarray:
    """Unfiltered gzip ratios of ncagen's first `rows` candidates, through generate(band 0-1)."""
    batch = GPU_BATCH if device.startswith("cuda") else DEFAULT_BATCH
    batches = generate(NCAConfig(states=n), Band(0.0, 1.0), shard_key=10_000 * seed + n, rows=rows,
                       stats=stats, device=device, batch=batch)
    return np.concatenate([b["gzip_ratio"] for b in batches])


def shares(r: np.ndarray) -> list[float]:
    """Share of ratios strictly inside each band of BANDS."""
    return [float(np.mean((r > np.float32(lo)) & (r < np.float32(hi)))) for lo, hi in BANDS]


def compare(n: int, rows: int, seed: int, device: str = "cpu") -> None:
    """Print the KS distance, quantiles and band shares of ncagen vs the reference at one n."""
    from scipy.stats import ks_2samp

    t0 = time.perf_counter()
    ours = ncagen_ratios(n, rows, seed, device=device)
    t1 = time.perf_counter()
    ref = reference_nca.reference_ratios(rows, n=n, seed=10_000 * seed + n)
    t2 = time.perf_counter()
    ks = ks_2samp(ours, ref)
    crit = 1.358 * math.sqrt(2 / rows)  # the null's 5% critical value, asymptotic
    print(f"\n## n = {n}: {rows} rows a side (ncagen {t1 - t0:.1f} s, reference {t2 - t1:.1f} s)")
    print(f"KS distance {ks.statistic:.4f} (issue 2: < 0.04; null 5% critical value {crit:.4f}), "
          f"p-value {ks.pvalue:.3f}")
    print("| quantile | " + " | ".join(f"{q:.0%}" for q in QUANTILES) + " |")
    print("|---" * (len(QUANTILES) + 1) + "|")
    print("| ncagen | " + " | ".join(f"{v:.4f}" for v in np.quantile(ours, QUANTILES)) + " |")
    print("| reference | " + " | ".join(f"{v:.4f}" for v in np.quantile(ref, QUANTILES)) + " |")
    if n == 10:
        print("| spec (5,000) | " + " | ".join(f"{v:.4f}" for v in SPEC_QUANTILES) + " |")
    print("\n| band share | <0.3 | 0.3-0.4 | 0.4-0.5 | 0.5-1.0 | tied at 35/1440 | <= 35/1440 |")
    print("|---|---|---|---|---|---|---|")
    for name, r in (("ncagen", ours), ("reference", ref)):
        print(f"| {name} | " + " | ".join(f"{s:.1%}" for s in shares(r))
              + f" | {np.mean(r == FROZEN):.1%} | {np.mean(r <= FROZEN):.1%} |")
    if n == 10:
        sig = [3 * math.sqrt(s * (1 - s) * (1 / rows + 1 / SPEC_ROWS)) for s in (*SPEC_SHARES, 0.10)]
        print("| spec (5,000) | " + " | ".join(f"{s:.1%}" for s in SPEC_SHARES) + " | - | 10.0% |")
        print("| 3 sigma | " + " | ".join(f"{s:.1%}" for s in sig[:4]) + f" | - | {sig[4]:.1%} |")


def binary_alphabet(rows: int, seed: int, device: str = "cpu") -> None:
    """n = 2: the largest ratio over `rows` random rules, and the CLI on band 0.5-1.0."""
    stats = ShardStats()
    t0 = time.perf_counter()
    ours = ncagen_ratios(2, rows, seed, stats, device)
    ref = reference_nca.reference_ratios(rows, n=2, seed=10_000 * seed + 2)
    print(f"\n## n = 2: {rows} rows a side ({time.perf_counter() - t0:.1f} s)")
    print(f"largest ratio: ncagen {ours.max():.4f}, reference {ref.max():.4f} (spec: about 0.25); "
          f"99.9% quantile ncagen {np.quantile(ours, 0.999):.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "ncagen.build", "--band", "0.5-1.0", "--states", "2",
               "--rows", "10", "--out", f"{tmp}/x", "--executor", "local", "--device", device]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        took = time.perf_counter() - t0
    print(f"`python -m ncagen.build --band 0.5-1.0 --states 2 --rows 10 --executor local "
          f"--device {device}`: "
          f"exit status {proc.returncode} after {took:.1f} s, stderr:\n    {proc.stderr.strip()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=5000, help="unfiltered rows per side and alphabet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="where ncagen rolls out: cpu or cuda[:i]")
    p.add_argument("--binary-rows", type=int, default=20_000, help="rows a side at n = 2")
    args = p.parse_args()
    import platform

    import torch

    if args.device != "cpu" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: no CUDA GPU is visible")
    print(f"# fidelity: Python {platform.python_version()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"ncagen on {args.device}")
    for n in (5, 10, 15, 20):
        compare(n, args.rows, args.seed, args.device)
    binary_alphabet(args.binary_rows, args.seed, args.device)


if __name__ == "__main__":
    main()
