"""Batched NCA trajectories: initial grids and the stochastic update, on CPU or any torch device.

One update (spec section 3) draws  next ~ Categorical(softmax((logits + b*onehot(state)) / tau)).
With tau = 1e-4 this is argmax except at near-ties, so we sample it as Gumbel-max
`argmax(logits / tau + G)` but draw the Gumbel noise only for cells whose two best logits are
within NEAR_TIE * tau of each other; elsewhere the noise could change the outcome with
probability below n * exp(-NEAR_TIE), far beneath anything measurable. The noise of cell c of
step t is a counter-based draw keyed by the row's own seed, so a row never depends on its batch.

Two engines compute the same arithmetic in the same order (so they agree bit for bit):
- `_advance_numba`: a fused per-row loop compiled by numba, for the CPU (fast, both cores);
- `_advance_torch`: batched elementwise torch ops, for CUDA (or any torch device).
`reference_logits` is the spec's network written with conv2d, for tests.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from . import rng
from .config import NCAConfig
from .rules import RuleParams

NEAR_TIE = 60.0  # in units of tau; exp(-60) ~ 1e-26


def init_state(rule_seeds: np.ndarray, sims: np.ndarray, cfg: NCAConfig) -> np.ndarray:
    """Initial grids (B, G, G) uint8: z ~ N(0, I_n), cells i.i.d. ~ Categorical(softmax(z))."""
    n, G = cfg.states, cfg.grid
    keys = rng.derive_many(np.asarray(rule_seeds, np.int64), rng.STREAM_INIT, np.asarray(sims))
    u = rng.uniform(keys[:, None], np.arange(2 * n + G * G)[None, :])  # (B, 2n + G*G)
    z = np.sqrt(-2.0 * np.log(u[:, :n])) * np.cos(2.0 * np.pi * u[:, n:2 * n])  # Box-Muller
    p = np.exp(z - z.max(axis=1, keepdims=True))
    cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)  # (B, n)
    cells = (u[:, 2 * n:, None] > cdf[:, None, :-1]).sum(axis=2)  # (B, G*G)
    return cells.astype(np.uint8).reshape(-1, G, G)


def noise_keys(rule_seeds: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """The key of each trajectory's update noise, (B,) uint64."""
    return rng.derive_many(np.asarray(rule_seeds, np.int64), rng.STREAM_NOISE, np.asarray(sims))


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; validates explicit choices."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but no CUDA GPU is visible")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:i], got {device!r}")
    return device


def advance(params: RuleParams, state: np.ndarray, keys: np.ndarray, t0: int, t1: int,
            cfg: NCAConfig, out: np.ndarray, rec_offset: int = 0, device: str = "cpu") -> np.ndarray:
    """Step grids from time t0 to t1, writing each recorded grid s_t into `out`.

    state: (B, G, G) uint8 grids at time t0; returns the grids at t1.
    out: (B, K, G, G) uint8; s_t with t = burn_in + k*dt lands in out[:, k - rec_offset]
    when that index is in range.
    """
    state = np.ascontiguousarray(state, np.uint8)
    tau = float(cfg.temperature)
    thr = np.float32(NEAR_TIE * tau)
    if device == "cpu":
        state = state.copy()
        _advance_numba(params.offset_table(), params.b1, params.w2, params.b2, params.w3,
                       params.b3, state, np.asarray(keys, np.uint64), t0, t1, cfg.burn_in, cfg.dt,
                       rec_offset, out, tau, thr, np.float32(cfg.identity_bias))
        return state
    return _advance_torch(params, state, keys, t0, t1, cfg, out, rec_offset, device)


# numba engine ------------------------------------------------------------------------------
@numba.njit(inline="always")
def _uniform_nb(key, ctr):
    z = key + (np.uint64(ctr) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (np.float64(z >> np.uint64(11)) + 0.5) * 1.1102230246251565e-16


@numba.njit(parallel=True, cache=True, nogil=True)
def _advance_numba(T1, b1, W2, b2, W3, b3, state, keys, t0, t1, burn_in, dt, rec_offset, out,
                   tau, thr, ibias):  # pragma: no cover - compiled
    B, G = state.shape[0], state.shape[1]
    nbr = np.empty((9, G * G), np.int64)
    for y in range(G):
        for x in range(G):
            o = 0
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    nbr[o, y * G + x] = ((y + dy + G) % G) * G + (x + dx + G) % G
                    o += 1
    for b in numba.prange(B):
        _advance_row(np.ascontiguousarray(T1[b].transpose(0, 2, 1)), b1[b], W2[b], b2[b], W3[b],
                     b3[b], state[b], keys[b], nbr, t0, t1, burn_in, dt, rec_offset, out[b], tau,
                     thr, ibias)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _advance_row(Tb, b1, W2, b2, W3, b3, state, key, nbr, t0, t1, burn_in, dt, rec_offset, out,
                 tau, thr, ibias):  # pragma: no cover - compiled
    # Every layer is an elementwise loop over the G*G cells (SIMD-friendly); each output still
    # sums its terms in the torch engine's order, so both engines agree bit for bit.
    G = state.shape[0]
    GG = G * G
    C1, n = Tb.shape[1], Tb.shape[2]
    H, K = W2.shape[0], out.shape[0]
    zero = np.float32(0.0)
    cur = state.copy().reshape(GG)
    nxt = np.empty(GG, np.uint8)
    h1 = np.empty((C1, GG), np.float32)
    h2 = np.empty((H, GG), np.float32)
    lg = np.empty((n, GG), np.float32)
    best = np.empty(GG, np.float32)
    second = np.empty(GG, np.float32)
    arg = np.empty(GG, np.uint8)
    nbs = np.empty((9, GG), np.uint8)
    for t in range(t0, t1 + 1):
        if t >= burn_in and (t - burn_in) % dt == 0:
            k = (t - burn_in) // dt - rec_offset
            if 0 <= k < K:
                out[k] = cur.reshape(G, G)
        if t == t1:
            break
        for o in range(9):
            for i in range(GG):
                nbs[o, i] = cur[nbr[o, i]]
        for c in range(C1):
            hc = h1[c]
            bc = b1[c]
            for i in range(GG):
                hc[i] = bc
            for o in range(9):
                To = Tb[o, c]
                no = nbs[o]
                for i in range(GG):
                    hc[i] = hc[i] + To[no[i]]
        for j in range(H):
            hj = h2[j]
            bj = b2[j]
            for i in range(GG):
                hj[i] = bj
            for c in range(C1):
                w = W2[j, c]
                hc = h1[c]
                for i in range(GG):
                    hj[i] = hj[i] + w * hc[i]
            for i in range(GG):
                hj[i] = max(hj[i], zero)
        for s in range(n):
            ls = lg[s]
            bs = b3[s]
            for i in range(GG):
                ls[i] = bs
            for j in range(H):
                w = W3[s, j]
                hj = h2[j]
                for i in range(GG):
                    ls[i] = ls[i] + w * hj[i]
            if ibias != zero:
                for i in range(GG):
                    if cur[i] == s:
                        ls[i] = ls[i] + ibias
        for i in range(GG):
            best[i] = lg[0, i]
            second[i] = -np.inf
            arg[i] = 0
        for s in range(1, n):
            for i in range(GG):
                v = lg[s, i]
                if v > best[i]:
                    second[i] = best[i]
                    best[i] = v
                    arg[i] = s
                elif v > second[i]:
                    second[i] = v
        for i in range(GG):
            if best[i] - second[i] < thr:
                base = (t * GG + i) * n
                top = -np.inf
                for s in range(n):
                    u = _uniform_nb(key, base + s)
                    zs = np.float64(lg[s, i]) / tau - math.log(-math.log(u))
                    if zs > top:
                        top = zs
                        arg[i] = s
            nxt[i] = arg[i]
        cur, nxt = nxt, cur
    state[:] = cur.reshape(G, G)


# torch engine ------------------------------------------------------------------------------
def _neighbour_index(G: int):
    import torch

    ys, xs = torch.meshgrid(torch.arange(G), torch.arange(G), indexing="ij")
    cols = [((ys + dy) % G) * G + (xs + dx) % G for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return torch.stack([c.reshape(-1) for c in cols], dim=1)  # (G*G, 9)


def _advance_torch(params: RuleParams, state: np.ndarray, keys: np.ndarray, t0: int, t1: int,
                   cfg: NCAConfig, out: np.ndarray, rec_offset: int, device: str) -> np.ndarray:
    import torch

    dev = torch.device(device)
    tt = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)  # noqa: E731
    T1, b1, W2, b2, W3, b3 = (tt(a) for a in (params.offset_table(), params.b1, params.w2,
                                             params.b2, params.w3, params.b3))
    B, G, n = state.shape[0], cfg.grid, cfg.states
    GG, C1, H, K = G * G, T1.shape[3], W2.shape[1], out.shape[1]
    keys_t = tt(np.asarray(keys, np.uint64).view(np.int64))
    nbr = _neighbour_index(G).to(dev)
    rows = torch.arange(B, device=dev)[:, None]  # (B, 1)
    cur = tt(state).long().reshape(B, GG)
    thr = torch.tensor(NEAR_TIE * cfg.temperature, dtype=torch.float32, device=dev)
    tau = float(cfg.temperature)
    for t in range(t0, t1 + 1):
        if t >= cfg.burn_in and (t - cfg.burn_in) % cfg.dt == 0:
            k = (t - cfg.burn_in) // cfg.dt - rec_offset
            if 0 <= k < K:
                out[:, k] = cur.to(torch.uint8).cpu().numpy().reshape(B, G, G)
        if t == t1:
            break
        nb = cur[:, nbr]  # (B, GG, 9)
        h1 = b1[:, None, :].expand(B, GG, C1)
        for o in range(9):
            h1 = h1 + T1[rows, o, nb[:, :, o]]  # (B, GG, C1)
        h2 = b2[:, None, :].expand(B, GG, H)
        for c in range(C1):
            h2 = h2 + W2[:, None, :, c] * h1[:, :, c, None]
        h2 = torch.where(h2 > 0, h2, torch.zeros((), dtype=h2.dtype, device=dev))  # (B, GG, H)
        lg = b3[:, None, :].expand(B, GG, n)
        for j in range(H):
            lg = lg + W3[:, None, :, j] * h2[:, :, j, None]  # (B, GG, n)
        if cfg.identity_bias:
            lg = lg + torch.nn.functional.one_hot(cur, n).to(lg.dtype) * np.float32(cfg.identity_bias)
        top2 = lg.topk(2, dim=-1).values
        near = (top2[..., 0] - top2[..., 1]) < thr  # (B, GG)
        nxt = lg.argmax(dim=-1)
        if bool(near.any()):
            bi, ci = near.nonzero(as_tuple=True)
            ctr = ((t * GG + ci) * n)[:, None] + torch.arange(n, device=dev)[None, :]
            u = rng.uniform_torch(keys_t[bi, None], ctr)  # (M, n) float64
            z = lg[bi, ci].double() / tau - torch.log(-torch.log(u))
            nxt[bi, ci] = z.argmax(dim=-1)
        cur = nxt
    return cur.to(torch.uint8).cpu().numpy().reshape(B, G, G)


# reference ---------------------------------------------------------------------------------
def reference_logits(params: RuleParams, state: np.ndarray, cfg: NCAConfig) -> np.ndarray:
    """The spec's network with torch conv2d on the one-hot torus: logits (B, n, G, G)."""
    import torch
    import torch.nn.functional as F

    B, n = state.shape[0], cfg.states
    x = F.one_hot(torch.from_numpy(state).long(), n).permute(0, 3, 1, 2).double()  # (B, n, G, G)
    x = F.pad(x, (1, 1, 1, 1), mode="circular")
    outs = []
    for b in range(B):
        w = lambda a: torch.from_numpy(a[b]).double()  # noqa: E731
        h = F.conv2d(x[b:b + 1], w(params.w1), w(params.b1))
        h = F.conv2d(h, w(params.w2)[:, :, None, None], w(params.b2)).relu()
        outs.append(F.conv2d(h, w(params.w3)[:, :, None, None], w(params.b3)))
    return torch.cat(outs).numpy()
