"""Fidelity: ncagen's unfiltered gzip ratios follow the spec's law (NCA_SPEC.md sections 1-6).

Two kinds of evidence, both at the defaults:
- n = 10 against the spec's calibration table (5,000 rules measured on the paper's reference
  code): every quantile and band share within 3 sigma of sampling noise;
- n in {5, 10, 15, 20} against tests/reference_nca.py, an independent literal implementation
  of the spec (torch.Generator, trunc_normal_, conv2d, full Gumbel noise): two-sample
  Kolmogorov-Smirnov distance under 0.04 on 3,000 rows a side (issue 2's criterion).
The full-size figures live in benchmarks/fidelity.py and benchmarks/RESULTS.md.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pytest

import reference_nca
from ncagen.config import Band, NCAConfig
from ncagen.generate import generate

ROWS = 3000  # per side; issue 2 asks for 3,000+ unfiltered rows
SPEC_ROWS = 5000  # rules behind the spec's calibration table
KS_MAX = 0.04
# The spec's n = 10 calibration table, quantile -> gzip ratio (4 decimals).
SPEC_QUANTILES = {0.01: 0.0222, 0.05: 0.0243, 0.10: 0.0299, 0.25: 0.2736, 0.50: 0.4764,
                  0.75: 0.5660, 0.90: 0.6042, 0.95: 0.6202, 0.99: 0.6417}
# Share of rules strictly inside each band (ratios of exactly 0.3, 0.4, 0.5 are in none).
SPEC_SHARES = {(0.0, 0.3): 0.268, (0.3, 0.4): 0.100, (0.4, 0.5): 0.178, (0.5, 1.0): 0.451}
FROZEN = np.float32(35 / 1440)  # a grid frozen into one non-zero state, 10 times over


@lru_cache(maxsize=None)
def ncagen_ratios(n: int, rows: int = ROWS) -> np.ndarray:
    """Unfiltered gzip ratios of ncagen's first `rows` candidates (band 0-1), float32."""
    cfg = NCAConfig(states=n)
    batches = list(generate(cfg, Band(0.0, 1.0), shard_key=2026 + n, rows=rows))
    return np.concatenate([b["gzip_ratio"] for b in batches])


@lru_cache(maxsize=None)
def reference_ratios(n: int, rows: int = ROWS) -> np.ndarray:
    """The same count of ratios from the independent reference implementation."""
    return reference_nca.reference_ratios(rows, n=n, seed=7 + n)


def sigma(p: float, rows: int) -> float:
    """Std of (our empirical CDF - the spec's) at a point of CDF p: binomial, both samples."""
    return math.sqrt(p * (1 - p) * (1 / rows + 1 / SPEC_ROWS))


# the reference implementation itself -------------------------------------------------------
def test_reference_weight_scale_is_the_spec_law():
    assert reference_nca.truncated_normal_std() == pytest.approx(reference_nca.TRUNC_STD, rel=1e-15)
    import torch

    w1, w2, w3 = reference_nca.sample_weights(1000, 10, torch.Generator().manual_seed(0))
    for w, fan_in in ((w1, 90), (w2, 4), (w3, 16)):
        scaled = w * math.sqrt(fan_in)  # unit variance by the LeCun law
        assert float(scaled.std()) == pytest.approx(1.0, abs=0.01)
        assert float(scaled.abs().max()) <= 2.0 / reference_nca.TRUNC_STD + 1e-5


def test_reference_network_is_the_spec_network():
    """The grouped conv2d equals the network summed out by hand, cell by cell, on the torus."""
    import torch

    B, n, G = 3, 5, 6
    gen = torch.Generator().manual_seed(1)
    weights = reference_nca.sample_weights(B, n, gen)
    state = torch.randint(0, n, (B, G, G), generator=gen)
    got = reference_nca.logits(state, weights, n).double().numpy()  # (B, n, G, G)
    w1, w2, w3 = (w.double().numpy() for w in weights)
    for b in range(B):
        W1, W2, W3 = w1[4 * b:4 * b + 4], w2[16 * b:16 * b + 16, :, 0, 0], w3[n * b:n * b + n, :, 0, 0]
        for y in range(G):
            for x in range(G):
                h = np.zeros(4)
                for dy in range(3):
                    for dx in range(3):
                        h += W1[:, int(state[b, (y + dy - 1) % G, (x + dx - 1) % G]), dy, dx]
                expected = W3 @ np.maximum(W2 @ h, 0)
                np.testing.assert_allclose(got[b, :, y, x], expected, rtol=1e-5, atol=1e-5)


def test_reference_tokens_follow_the_spec():
    grid = np.arange(16).reshape(4, 4) % 3  # n = 3, p = 2
    tokens = reference_nca.patch_tokens(grid, 3, 2)
    c = lambda y, x: int(grid[y, x])  # noqa: E731
    assert tokens.tolist() == [c(py, px) + 3 * c(py, px + 1) + 9 * c(py + 1, px) + 27 * c(py + 1, px + 1)
                               for py in (0, 2) for px in (0, 2)]


# n = 10 against the spec's calibration table ------------------------------------------------
def test_calibration_quantiles_n10():
    """At every tabled quantile p with value v: P(ratio < v) <= p <= P(ratio <= v), within 3 sigma.

    The table's values are rounded to 4 decimals (and may interpolate between two ratios k/1440),
    so v is widened by the rounding; the tolerance is the binomial noise of both samples.
    """
    r = ncagen_ratios(10).astype(np.float64)
    for p, v in SPEC_QUANTILES.items():
        below = float(np.mean(r < v - 5e-5))
        at_or_below = float(np.mean(r <= v + 5e-5))
        tol = 3 * sigma(p, len(r))
        assert below - tol <= p <= at_or_below + tol, (p, v, below, at_or_below, tol)


def test_calibration_band_shares_n10():
    r = ncagen_ratios(10)
    for (lo, hi), share in SPEC_SHARES.items():
        ours = float(np.mean((r > np.float32(lo)) & (r < np.float32(hi))))
        assert abs(ours - share) <= 3 * sigma(share, len(r)), (lo, hi, ours, share)


def test_frozen_rules_tie_at_35_over_1440():
    """Many rules freeze into one state by step 10 and tie at exactly 35/1440 (as float32).

    From the table: the 5% quantile is that tie, and the 10% one (0.0299, which interpolates
    between 35/1440 and 44/1440 in a sample of 5,000) puts exactly 10.0% of rules at or below it.
    """
    r = ncagen_ratios(10)
    tied = float(np.mean(r == FROZEN))
    at_or_below = float(np.mean(r <= FROZEN))
    assert tied > 0.05, tied
    assert float(np.mean(r < FROZEN)) <= 0.05 + 3 * sigma(0.05, len(r))
    assert abs(at_or_below - 0.10) <= 3 * sigma(0.10, len(r)), at_or_below


# n in {5, 10, 15, 20} against the independent reference ----------------------------------
@pytest.mark.parametrize("n", [5, 10, 15, 20])
def test_ks_distance_to_reference(n):
    """Issue 2's criterion, 3,000 rows a side (the null's 5% critical value is 0.035)."""
    from scipy.stats import ks_2samp

    ours, ref = ncagen_ratios(n), reference_ratios(n)
    assert len(ours) == len(ref) == ROWS
    assert ours.min() > 0 and ours.max() < 1  # band 0-1 keeps every candidate
    result = ks_2samp(ours, ref)
    assert result.statistic < KS_MAX, (n, result.statistic, result.pvalue)
