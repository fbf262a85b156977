"""Rule sampling time per rule: the fused kernel (rules.sample_rules) against the unfused path.

    python benchmarks/bench_rules.py [--states 10] [--repeat 5] [--batches 1024,8192]

The unfused path is the sampler as it was before the fusion, reproduced here: all uniforms as a
(B, total) float64 array, the compiled ndtri of them (its central branch for all, then the tails
gathered, over the whole array), then numpy slicing, scaling and a float32 cast per tensor.
Both run on one numba thread; the time is the median of --repeat runs, per rule. The two
outputs are checked to be bit-identical first.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import statistics
import sys
import time

import numba
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from ncagen import rng  # noqa: E402
from ncagen.config import NCAConfig  # noqa: E402
from ncagen.rules import (_LO, _NDTRI_P0, _NDTRI_P1, _NDTRI_Q0, _NDTRI_Q1, TRUNC_STD,  # noqa: E402
                          RuleParams, sample_rules, uniforms)

P0, Q0, P1, Q1 = (np.array(c) for c in (_NDTRI_P0, _NDTRI_Q0, _NDTRI_P1, _NDTRI_Q1))
EXP_M2, SQRT_2PI = 0.13533528323661269189, 2.50662827463100050242


@numba.njit(inline="always")
def horner(x, coef):
    r = 0.0
    for c in coef:
        r = r * x + c
    return r


@numba.njit(nogil=True, error_model="numpy")
def unfused_ndtri(flat, lo, hi, res):
    """The ndtri kernel as it was: whole-array passes."""
    tails = np.empty(flat.shape[0], np.int64)
    m = 0
    for k in range(flat.shape[0]):
        y = (lo + flat[k] * (hi - lo)) - 0.5
        y2 = y * y
        res[k] = (y + y * (y2 * horner(y2, P0) / horner(y2, Q0))) * SQRT_2PI
    for k in range(flat.shape[0]):
        y = lo + flat[k] * (hi - lo)
        tails[m] = k
        m += (y <= EXP_M2) | (y > 1.0 - EXP_M2)
    for t in range(m):
        k = tails[t]
        y = lo + flat[k] * (hi - lo)
        upper = y > 1.0 - EXP_M2
        if upper:
            y = 1.0 - y
        x = math.sqrt(-2.0 * math.log(y))
        x = (x - math.log(x) / x) - (1.0 / x) * horner(1.0 / x, P1) / horner(1.0 / x, Q1)
        res[k] = x if upper else -x


def unfused_sample_rules(rule_seeds: np.ndarray, cfg: NCAConfig) -> RuleParams:
    """sample_rules as it was: full (B, total) passes for uniforms, ndtri, scale and cast."""
    keys = rng.derive_many(np.asarray(rule_seeds, np.int64), rng.STREAM_PARAMS)
    B, n, C1, H = len(keys), cfg.states, cfg.conv_channels, cfg.hidden
    shapes = [((C1, n, 3, 3), 9 * n), ((H, C1), C1), ((n, H), H)]
    total = sum(int(np.prod(s)) for s, _ in shapes)
    u = uniforms(keys, total)
    t = np.empty_like(u)
    unfused_ndtri(u.reshape(-1), _LO, 1.0 - _LO, t.reshape(-1))
    weights, start = [], 0
    for shape, fan_in in shapes:
        size = int(np.prod(shape))
        scale = math.sqrt(1.0 / fan_in) / TRUNC_STD
        weights.append((t[:, start:start + size] * scale).astype(np.float32).reshape(B, *shape))
        start += size
    zeros = lambda k: np.zeros((B, k), np.float32)  # noqa: E731
    return RuleParams(weights[0], zeros(C1), weights[1], zeros(H), weights[2], zeros(n))


def per_rule_us(fn, seeds: np.ndarray, cfg: NCAConfig, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(seeds, cfg)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / len(seeds) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--states", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batches", default="1024,8192")
    args = ap.parse_args()
    numba.set_num_threads(1)
    cfg = NCAConfig(states=args.states)
    for B in (int(b) for b in args.batches.split(",")):
        seeds = np.arange(B, dtype=np.int64) * 1_000_003 + 17
        old, new = unfused_sample_rules(seeds, cfg), sample_rules(seeds, cfg)  # also compiles
        assert all(np.array_equal(getattr(old, k).view(np.uint32), getattr(new, k).view(np.uint32))
                   for k in ("w1", "w2", "w3")), "fused weights differ from the unfused path"
        t_old = per_rule_us(unfused_sample_rules, seeds, cfg, args.repeat)
        t_new = per_rule_us(sample_rules, seeds, cfg, args.repeat)
        print(f"states {cfg.states}, {new.num_params()} params, batch {B}: "
              f"unfused {t_old:.2f} us/rule, fused {t_new:.2f} us/rule ({t_old / t_new:.2f}x)")


if __name__ == "__main__":
    main()
