"""Sample NCA rules: the weights of the tiny transition network, one rule per seed.

The network (spec section 1) maps the one-hot grid to per-cell logits:
conv3x3 (n -> C1, wrap padding) -> conv1x1 (C1 -> H) -> ReLU -> conv1x1 (H -> n).
Weights are LeCun-normal with a truncated-normal correction, biases are zero. Each weight is
drawn by inverse CDF from the rule's own counter-based stream, so a rule is a pure function of
its seed, whatever batch it is sampled in.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from . import rng
from .config import NCAConfig

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


def _truncated_normal(u: np.ndarray) -> np.ndarray:
    """Map uniforms in (0, 1) to a standard normal truncated to [-TRUNC, TRUNC]."""
    import torch

    lo = 0.5 * math.erfc(TRUNC / math.sqrt(2.0))  # Phi(-2)
    hi = 1.0 - lo
    return torch.special.ndtri(torch.from_numpy(lo + u * (hi - lo))).numpy()


def uniforms(keys: np.ndarray, count: int) -> np.ndarray:
    """rng.uniform(keys[:, None], arange(count)[None, :]) as (B, count) float64, compiled."""
    return _uniform_kernel()(np.asarray(keys, np.uint64), int(count))


@functools.lru_cache(maxsize=None)
def _uniform_kernel():
    import numba

    @numba.njit(cache=True, nogil=True)
    def draw(keys, count):  # pragma: no cover - compiled
        out = np.empty((keys.shape[0], count), np.float64)
        for b in range(keys.shape[0]):
            for c in range(count):
                z = keys[b] + (np.uint64(c) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
                z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
                z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
                z = z ^ (z >> np.uint64(31))
                out[b, c] = (np.float64(z >> np.uint64(11)) + 0.5) * 1.1102230246251565e-16
        return out

    return draw


def sample_rules(rule_seeds: np.ndarray, cfg: NCAConfig) -> RuleParams:
    """Draw one rule per seed: truncated LeCun-normal weights, zero biases."""
    keys = rng.derive_many(np.asarray(rule_seeds, np.int64), rng.STREAM_PARAMS)  # (B,)
    B, n, C1, H = len(keys), cfg.states, cfg.conv_channels, cfg.hidden
    shapes = [((C1, n, 3, 3), 9 * n), ((H, C1), C1), ((n, H), H)]
    total = sum(int(np.prod(s)) for s, _ in shapes)
    t = _truncated_normal(uniforms(keys, total))  # (B, total)
    weights, start = [], 0
    for shape, fan_in in shapes:
        size = int(np.prod(shape))
        scale = math.sqrt(1.0 / fan_in) / TRUNC_STD
        weights.append((t[:, start:start + size] * scale).astype(np.float32).reshape(B, *shape))
        start += size
    zeros = lambda k: np.zeros((B, k), np.float32)  # noqa: E731
    return RuleParams(weights[0], zeros(C1), weights[1], zeros(H), weights[2], zeros(n))
