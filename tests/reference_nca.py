"""An independent, literal implementation of NCA_SPEC.md, used only to check ncagen's fidelity.

It shares no code with ncagen's rules, rollout, rng or tokens: plain torch with one
`torch.Generator`, `torch.nn.init.trunc_normal_` for the weights, `F.conv2d` on the one-hot
torus (the B rules batched as groups), full Gumbel noise on every cell at every step, and
`gzip.compress` on the little-endian int32 patch tokens. It is written for clarity, not speed,
and computes gzip ratios only (the first `ratio_grids` recorded grids of each trajectory).
"""

from __future__ import annotations

import gzip
import math

import numpy as np

TRUNC_STD = 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2], from the spec


def truncated_normal_std() -> float:
    """The standard deviation of N(0, 1) truncated to [-2, 2], from its closed form."""
    phi2 = math.exp(-2.0) / math.sqrt(2.0 * math.pi)  # density at 2
    mass = math.erf(2.0 / math.sqrt(2.0))  # P(-2 < X < 2)
    return math.sqrt(1.0 - 2.0 * 2.0 * phi2 / mass)


def sample_weights(B: int, n: int, gen, channels: int = 4, hidden: int = 16):
    """B rules: three conv weights, LeCun-normal with the truncation correction (biases are 0)."""
    import torch

    def lecun(shape, fan_in):
        w = torch.empty(shape, dtype=torch.float32)
        torch.nn.init.trunc_normal_(w, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=gen)
        return w * (math.sqrt(1.0 / fan_in) / TRUNC_STD)

    w1 = lecun((B * channels, n, 3, 3), 9 * n)  # groups=B: rule b owns out-channels b*C..b*C+C-1
    w2 = lecun((B * hidden, channels, 1, 1), channels)
    w3 = lecun((B * n, hidden, 1, 1), hidden)
    return w1, w2, w3


def logits(state, weights, n: int):
    """The rule network on a batch of grids: state (B, G, G) long -> logits (B, n, G, G) float32."""
    import torch.nn.functional as F

    import torch

    w1, w2, w3 = weights
    B, G, _ = state.shape
    wrap = torch.arange(-1, G + 1) % G  # circular padding by one cell: rows/cols G-1, 0..G-1, 0
    padded = state[:, wrap][:, :, wrap]  # (B, G+2, G+2)
    x = F.one_hot(padded, n).permute(0, 3, 1, 2).float().reshape(1, B * n, G + 2, G + 2)
    h = F.conv2d(x, w1, groups=B)  # (1, B*C, G, G); zero biases
    h = F.conv2d(h, w2, groups=B).relu()  # (1, B*H, G, G)
    return F.conv2d(h, w3, groups=B).reshape(B, n, G, G)


def initial_state(B: int, n: int, G: int, gen):
    """z ~ N(0, I_n) per trajectory, then every cell i.i.d. ~ Categorical(softmax(z))."""
    import torch

    z = torch.randn(B, n, generator=gen, dtype=torch.float64)
    probs = torch.softmax(z, dim=1)
    return torch.multinomial(probs, G * G, replacement=True, generator=gen).reshape(B, G, G)


def step(state, weights, n: int, tau: float, gen):
    """One update: argmax(logits / tau + Gumbel), a fresh Gumbel for every cell and state."""
    import torch

    lg = logits(state, weights, n).permute(0, 2, 3, 1).contiguous()  # (B, G, G, n) float32
    u = torch.rand(lg.shape, generator=gen).clamp_min_(torch.finfo(torch.float32).tiny)
    return (lg / tau - torch.log(-torch.log(u))).argmax(dim=-1)  # (B, G, G)


def patch_tokens(grids: np.ndarray, n: int, p: int) -> np.ndarray:
    """Grids (..., G, G) -> tokens (..., (G/p)**2): sum_k c_k n**k over each patch, row-major."""
    G = grids.shape[-1]
    out = []
    for py in range(0, G, p):
        for px in range(0, G, p):
            cells = [grids[..., py + dy, px + dx].astype(np.int64) for dy in range(p) for dx in range(p)]
            out.append(sum(c * n**k for k, c in enumerate(cells)))
    return np.stack(out, axis=-1)


def gzip_ratio(tokens: np.ndarray) -> float:
    """len(gzip.compress(int32 LE tokens, level 9)) / their byte length."""
    data = np.ascontiguousarray(tokens, dtype="<i4").tobytes()
    return len(gzip.compress(data, compresslevel=9)) / len(data)


def reference_ratios(count: int, n: int = 10, seed: int = 0, grid: int = 12, patch: int = 2,
                     burn_in: int = 10, ratio_grids: int = 10, tau: float = 1e-4,
                     batch: int = 500) -> np.ndarray:
    """gzip ratios (float32) of `count` independent random rules, one trajectory each."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    ratios = []
    for start in range(0, count, batch):
        B = min(batch, count - start)
        weights = sample_weights(B, n, gen)
        state = initial_state(B, n, grid, gen)
        recorded = []
        for t in range(burn_in + ratio_grids):
            if t >= burn_in:
                recorded.append(state.numpy().copy())
            if t < burn_in + ratio_grids - 1:
                state = step(state, weights, n, tau, gen)
        tokens = patch_tokens(np.stack(recorded, axis=1), n, patch)  # (B, R, P)
        ratios.extend(gzip_ratio(tok) for tok in tokens)
    return np.asarray(ratios, np.float32)
