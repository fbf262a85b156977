"""Sample NCA rules: the weights of the tiny transition network, one rule per seed.

The network (spec section 1) maps the one-hot grid to per-cell logits:
conv3x3 (n -> C1, wrap padding) -> conv1x1 (C1 -> H) -> ReLU -> conv1x1 (H -> n).
Weights are LeCun-normal with a truncated-normal correction, biases are zero. Each weight is
drawn by inverse CDF from the rule's own counter-based stream, so a rule is a pure function of
its seed, whatever batch it is sampled in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from . import rng
from .config import NCAConfig
from .jit import njit

TRUNC = 2.0  # truncation of the standard normal, in standard deviations
TRUNC_STD = 0.87962566103423978  # std of N(0,1) truncated to [-2, 2]


@dataclass(frozen=True)
class RuleParams:
    """A batch of B rules, as float32 arrays in torch's conv layout (out, in, kh, kw)."""

    w1: np.ndarray  # (B, C1, n, 3, 3)
    b1: np.ndarray  # (B, C1)
    w2: np.ndarray  # (B, H, C1)
    b2: np.ndarray  # (B, H)
    w3: np.ndarray  # (B, n, H)
    b3: np.ndarray  # (B, n)

    @property
    def batch(self) -> int:
        return self.w1.shape[0]

    def offset_table(self) -> np.ndarray:
        """The 3x3 conv as a lookup table T[b, o, s, c] = w1[b, c, s, dy, dx], o = 3*dy + dx."""
        B, C1, n = self.w1.shape[:3]
        return np.ascontiguousarray(self.w1.transpose(0, 3, 4, 2, 1).reshape(B, 9, n, C1))

    def num_params(self) -> int:
        """Parameters of one rule (weights and biases)."""
        return sum(a[0].size for a in (self.w1, self.b1, self.w2, self.b2, self.w3, self.b3))

    def subset(self, idx: np.ndarray) -> "RuleParams":
        return RuleParams(*(a[idx] for a in (self.w1, self.b1, self.w2, self.b2, self.w3, self.b3)))

    @staticmethod
    def concat(parts: list["RuleParams"]) -> "RuleParams":
        """The batches of `parts`, one after another."""
        names = ("w1", "b1", "w2", "b2", "w3", "b3")
        return RuleParams(*(np.concatenate([getattr(p, k) for p in parts]) for k in names))


_LO = 0.5 * math.erfc(TRUNC / math.sqrt(2.0))  # Phi(-2): u in (0, 1) maps to lo + u (1 - 2 lo)


def _truncated_normal(u: np.ndarray) -> np.ndarray:
    """Map uniforms in (0, 1) to a standard normal truncated to [-TRUNC, TRUNC] (inverse CDF)."""
    u = np.ascontiguousarray(u, np.float64)
    out = np.empty_like(u)
    _ndtri(u.reshape(-1), _LO, 1.0 - _LO, out.reshape(-1))
    return out


# The inverse normal CDF by Cephes' rational approximations (S. L. Moshier), the method of
# torch.special.ndtri and scipy.special.ndtri, evaluated in the same order as torch's scalar
# code, so the weights equal those of torch-sampled rules. Only the two branches that
# [Phi(-2), Phi(2)] reaches are needed: |y - 0.5| <= 0.5 - exp(-2), and y down to exp(-32).
_NDTRI_P0 = (-5.99633501014107895267e1, 9.80010754185999661536e1, -5.66762857469070293439e1,
             1.39312609387279679503e1, -1.23916583867381258016e0)
_NDTRI_Q0 = (1.0, 1.95448858338141759834e0, 4.67627912898881538453e0, 8.63602421390890590575e1,
             -2.25462687854119370527e2, 2.00260212380060660359e2, -8.20372256168333339912e1,
             1.59056225126211695515e1, -1.18331621121330003142e0)
_NDTRI_P1 = (4.05544892305962419923e0, 3.15251094599893866154e1, 5.71628192246421288162e1,
             4.40805073893200834700e1, 1.46849561928858024014e1, 2.18663306850790267539e0,
             -1.40256079171354495875e-1, -3.50424626827848203418e-2, -8.57456785154685413611e-4)
_NDTRI_Q1 = (1.0, 1.57799883256466749731e1, 4.53907635128879210584e1, 4.13172038254672030440e1,
             1.50425385692907503408e1, 2.50464946208309415979e0, -1.42182922854787788574e-1,
             -3.80806407691578277194e-2, -9.33259480895457427372e-4)
_EXP_M2 = 0.13533528323661269189  # exp(-2)
_SQRT_2PI = 2.50662827463100050242
_BLOCK = 4096  # _ndtri's values per block: its scratch stays in cache


# Kernels at module level, not closures: numba's disk cache misses every time for a closure.
@numba.njit(inline="always")
def _horner(x, coef):  # pragma: no cover - compiled
    r = 0.0
    for c in coef:
        r = r * x + c
    return r


@numba.njit(inline="always")
def _ndtri_into(y, scale, out, tails, xs, logs):  # pragma: no cover - compiled
    """out[j] = ndtri(y[j]) * scale (in float64, then as out's dtype), y in [Phi(-2), Phi(2)].

    The central branch for all, branch-free so it vectorises; then the tails, gathered, their two
    logs (scalar calls) apart from the rest of their arithmetic, which vectorises. The operations
    and their order are Cephes' (no fastmath, so no FMA or reassociation).
    """
    for j in range(y.shape[0]):
        x = y[j] - 0.5
        x2 = x * x
        r = x2 * _horner(x2, _NDTRI_P0) / _horner(x2, _NDTRI_Q0)
        out[j] = ((x + x * r) * _SQRT_2PI) * scale
    m = 0
    for j in range(y.shape[0]):  # |y - 0.5| > 0.5 - exp(-2)
        tails[m] = j
        m += (y[j] <= _EXP_M2) | (y[j] > 1.0 - _EXP_M2)
    for t in range(m):
        v = y[tails[t]]
        xs[t] = math.sqrt(-2.0 * math.log(1.0 - v if v > 1.0 - _EXP_M2 else v))
        logs[t] = math.log(xs[t])
    for t in range(m):
        x, z = xs[t], 1.0 / xs[t]
        xs[t] = (x - logs[t] / x) - z * _horner(z, _NDTRI_P1) / _horner(z, _NDTRI_Q1)
    for t in range(m):
        j = tails[t]
        out[j] = (xs[t] if y[j] > 1.0 - _EXP_M2 else -xs[t]) * scale


@njit(error_model="numpy")
def _ndtri(flat, lo, hi, res):  # pragma: no cover - compiled
    """res = ndtri(lo + flat * (hi - lo)), in blocks."""
    y = np.empty(min(flat.shape[0], _BLOCK), np.float64)
    tails, xs, logs = np.empty(y.shape[0], np.int64), np.empty_like(y), np.empty_like(y)
    for s in range(0, flat.shape[0], _BLOCK):
        e = min(s + _BLOCK, flat.shape[0])
        for k in range(s, e):
            y[k - s] = lo + flat[k] * (hi - lo)
        _ndtri_into(y[:e - s], 1.0, res[s:e], tails, xs, logs)


@numba.njit(inline="always")
def uniform_at(key, ctr):  # pragma: no cover - compiled
    """rng.uniform(key, ctr) for one uint64 key and counter, in compiled code."""
    z = key + (np.uint64(ctr) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (np.float64(z >> np.uint64(11)) + 0.5) * 1.1102230246251565e-16


def uniforms(keys: np.ndarray, count: int) -> np.ndarray:
    """rng.uniform(keys[:, None], arange(count)[None, :]) as (B, count) float64, compiled."""
    return _draw(np.asarray(keys, np.uint64), int(count))


@njit
def _draw(keys, count):  # pragma: no cover - compiled
    out = np.empty((keys.shape[0], count), np.float64)
    for b in range(keys.shape[0]):
        for c in range(count):
            out[b, c] = uniform_at(keys[b], c)
    return out


def sample_rules(rule_seeds: np.ndarray, cfg: NCAConfig) -> RuleParams:
    """Draw one rule per seed: truncated LeCun-normal weights, zero biases.

    Weight k of a rule (w1, w2, w3 flattened, in turn) is ndtri of uniform k of its stream,
    times sqrt(1 / fan_in) / TRUNC_STD in float64, cast to float32; one compiled pass per rule.
    """
    keys = rng.derive_many(np.asarray(rule_seeds, np.int64), rng.STREAM_PARAMS)  # (B,)
    B, n, C1, H = len(keys), cfg.states, cfg.conv_channels, cfg.hidden
    shapes = [((C1, n, 3, 3), 9 * n), ((H, C1), C1), ((n, H), H)]
    weights = [np.empty((B, *shape), np.float32) for shape, _ in shapes]
    args = []
    for w, (shape, fan_in) in zip(weights, shapes):
        args += [w.reshape(B, math.prod(shape)), math.sqrt(1.0 / fan_in) / TRUNC_STD]
    _sample(keys, _LO, 1.0 - _LO, *args)
    zeros = lambda k: np.zeros((B, k), np.float32)  # noqa: E731
    return RuleParams(weights[0], zeros(C1), weights[1], zeros(H), weights[2], zeros(n))


@njit(error_model="numpy")
def _sample(keys, lo, hi, w1, s1, w2, s2, w3, s3):  # pragma: no cover - compiled
    """Rule b's w1, w2, w3 (flattened) from keys[b], one tensor at a time, in cache:
    w[j] = ndtri(lo + u * (hi - lo)) * s, u its uniform; the counters run through w1, w2, w3."""
    y = np.empty(max(w1.shape[1], w2.shape[1], w3.shape[1]), np.float64)
    tails, xs, logs = np.empty(y.shape[0], np.int64), np.empty_like(y), np.empty_like(y)
    for b in range(keys.shape[0]):
        c0 = 0
        for w, scale in ((w1, s1), (w2, s2), (w3, s3)):
            size = w.shape[1]
            for j in range(size):
                y[j] = lo + uniform_at(keys[b], c0 + j) * (hi - lo)
            _ndtri_into(y[:size], scale, w[b], tails, xs, logs)
            c0 += size
