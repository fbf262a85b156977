"""Batched NCA trajectories: initial grids and the stochastic update, on CPU or any torch device.

One update (spec section 3) draws  next ~ Categorical(softmax((logits + b*onehot(state)) / tau)).
With tau = 1e-4 this is argmax except at near-ties, so we sample it as Gumbel-max
`argmax(logits / tau + G)` but draw the Gumbel noise only for cells whose two best logits are
within NEAR_TIE * tau of each other; elsewhere the noise could change the outcome with
probability below n * exp(-NEAR_TIE), far beneath anything measurable. The noise of cell c of
step t is a counter-based draw keyed by the row's own seed, so a row never depends on its batch.

Two engines compute the same arithmetic in the same order (so they agree bit for bit):
- `_numba_kernel`: a per-row loop compiled by numba for one network shape, for the CPU; the
  rows of a batch are shared out over threads (the kernel releases the GIL);
- `_advance_torch`: batched elementwise torch ops, for CUDA (or any torch device).
Both sum the 3x3 conv one window row at a time, h1 = ((b1 + r_top) + r_mid) + r_bottom with
r = (T[left] + T[centre]) + T[right], so the CPU engine can look each row's sum up in a per-rule
table indexed by the row's three states (3 lookups per channel instead of 9). The CPU engine
also skips work that cannot change the outcome: a grid that maps to itself with no near-tie
cell is fixed forever (later grids are copies), and a near-tie cell draws noise only for the
states within NEAR_TIE * tau of its best logit (no Gumbel draw here exceeds another by 41).
`reference_logits` is the spec's network written with conv2d, for tests.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

from . import rng
from .config import NCAConfig
from .rules import RuleParams, uniforms
from .threads import pool

NEAR_TIE = 60.0  # in units of tau; exp(-60) ~ 1e-26
TRIPLE_TABLE_STATES = 16  # up to this alphabet the CPU engine tabulates whole row triples


def init_state(rule_seeds: np.ndarray, sims: np.ndarray, cfg: NCAConfig) -> np.ndarray:
    """Initial grids (B, G, G) uint8: z ~ N(0, I_n), cells i.i.d. ~ Categorical(softmax(z))."""
    n, G = cfg.states, cfg.grid
    keys = rng.derive_many(np.asarray(rule_seeds, np.int64), rng.STREAM_INIT, np.asarray(sims))
    u = uniforms(keys, 2 * n + G * G)  # (B, 2n + G*G), as rng.uniform draws them
    z = np.sqrt(-2.0 * np.log(u[:, :n])) * np.cos(2.0 * np.pi * u[:, n:2 * n])  # Box-Muller
    p = np.exp(z - z.max(axis=1, keepdims=True))
    cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)  # (B, n)
    cells = np.zeros((len(keys), G * G), np.uint8)
    for k in range(n - 1):  # a cell's state = how many cdf steps its uniform exceeds
        cells += u[:, 2 * n:] > cdf[:, k:k + 1]
    return cells.reshape(-1, G, G)


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


def cpu_threads() -> int:
    """Threads the CPU engine uses by default: numba's thread count (the build caps it)."""
    return numba.get_num_threads()


def advance(params: RuleParams, state: np.ndarray, keys: np.ndarray, t0: int, t1: int,
            cfg: NCAConfig, out: np.ndarray, rec_offset: int = 0, device: str = "cpu",
            threads: int | None = None) -> np.ndarray:
    """Step grids from time t0 to t1, writing each recorded grid s_t into `out`.

    state: (B, G, G) uint8 grids at time t0; returns the grids at t1.
    out: (B, K, G, G) uint8; s_t with t = burn_in + k*dt lands in out[:, k - rec_offset]
    when that index is in range. On the CPU, rows are split over `threads` threads
    (default `cpu_threads()`).
    """
    state = np.ascontiguousarray(state, np.uint8)
    tau = float(cfg.temperature)
    thr = np.float32(NEAR_TIE * tau)
    if device == "cpu":
        state = state.copy()
        kernel = _numba_kernel(cfg.states, params.b1.shape[1], params.b2.shape[1], cfg.grid)
        args = (params.offset_table(), params.b1, params.w2, params.b2, params.w3, params.b3, state,
                np.asarray(keys, np.uint64), t0, t1, cfg.burn_in, cfg.dt, rec_offset, out, tau,
                thr, np.float32(cfg.identity_bias))
        B = state.shape[0]
        threads = max(1, min(threads or cpu_threads(), B))
        if threads == 1:
            kernel(*args, 0, B)
        else:  # the kernel releases the GIL, so plain threads share the rows out
            cuts = [B * k // threads for k in range(threads + 1)]
            list(pool(threads, "ncagen-rollout").map(lambda lo, hi: kernel(*args, lo, hi), cuts[:-1], cuts[1:]))
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


@functools.lru_cache(maxsize=None)
def _numba_kernel(n: int, C1: int, H: int, G: int):
    """The CPU engine for one network shape, stepping rows lo..hi-1 of a batch.

    Sizes are compile-time constants, so numba unrolls the short reductions and vectorises
    the loops over the cells; the loops keep the torch engine's order of every sum.
    """
    GG = G * G
    N3 = n ** 3 if n <= TRIPLE_TABLE_STATES else 0  # codes of a row triple; 0 = no table

    @numba.njit(cache=True, nogil=True, error_model="numpy")
    def kernel(T1, b1_, W2_, b2_, W3_, b3_, state, keys, t0, t1, burn_in, dt, rec_offset, out,
               tau, thr, ibias, lo, hi):  # pragma: no cover - compiled
        zero = np.float32(0.0)
        K = out.shape[1]
        tab = np.empty((3, max(N3, 1), C1), np.float32)
        cur = np.empty(GG, np.uint8)
        nxt = np.empty(GG, np.uint8)
        codes = np.empty(GG + 2 * G, np.int32)  # row codes with a wrapped row above and below
        acc = np.empty(C1, np.float32)
        h1 = np.empty((C1, GG), np.float32)
        h2 = np.empty((H, GG), np.float32)
        lg = np.empty((n, GG), np.float32)
        best = np.empty(GG, np.float32)
        second = np.empty(GG, np.float32)
        arg = np.empty(GG, np.float32)  # the best state, as a float so the scan stays SIMD
        for b in range(lo, hi):
            T, b1, W2, b2, W3, b3, key = T1[b], b1_[b], W2_[b], b2_[b], W3_[b], b3_[b], keys[b]
            # tab[dy, (s0*n + s1)*n + s2, c] = (T[3dy, s0, c] + T[3dy+1, s1, c]) + T[3dy+2, s2, c]
            for dy in range(3 if N3 else 0):
                for s0 in range(n):
                    for s1 in range(n):
                        for s2 in range(n):
                            code = (s0 * n + s1) * n + s2
                            for c in range(C1):
                                tab[dy, code, c] = ((T[3 * dy, s0, c] + T[3 * dy + 1, s1, c])
                                                    + T[3 * dy + 2, s2, c])
            for i in range(GG):
                cur[i] = state[b, i // G, i % G]
            frozen = False
            for t in range(t0, t1 + 1):
                if t >= burn_in and (t - burn_in) % dt == 0:
                    k = (t - burn_in) // dt - rec_offset
                    if 0 <= k < K:
                        for i in range(GG):
                            out[b, k, i // G, i % G] = cur[i]
                if t == t1 or frozen:
                    continue
                # layer 1: the 3x3 conv, one horizontal row triple at a time
                for y in range(G):
                    r = y * G
                    for x in range(G):
                        xl = x - 1 if x > 0 else G - 1
                        xr = x + 1 if x < G - 1 else 0
                        codes[G + r + x] = ((np.int32(cur[r + xl]) * n + np.int32(cur[r + x])) * n
                                            + np.int32(cur[r + xr]))
                for x in range(G):
                    codes[x] = codes[GG + x]
                    codes[GG + G + x] = codes[G + x]
                if N3:
                    for i in range(GG):
                        a, m, d = codes[i], codes[i + G], codes[i + 2 * G]
                        for c in range(C1):
                            h1[c, i] = ((b1[c] + tab[0, a, c]) + tab[1, m, c]) + tab[2, d, c]
                else:
                    for i in range(GG):
                        for c in range(C1):
                            acc[c] = b1[c]
                        for dy in range(3):
                            cd = codes[i + dy * G]
                            s0, s1, s2 = cd // (n * n), (cd // n) % n, cd % n
                            for c in range(C1):
                                acc[c] = acc[c] + ((T[3 * dy, s0, c] + T[3 * dy + 1, s1, c])
                                                   + T[3 * dy + 2, s2, c])
                        for c in range(C1):
                            h1[c, i] = acc[c]
                # layer 2 + ReLU
                for j in range(H):
                    for i in range(GG):
                        v = b2[j]
                        for c in range(C1):
                            v = v + W2[j, c] * h1[c, i]
                        h2[j, i] = v if v > zero else zero
                # layer 3 with the identity bias, keeping each cell's two best logits
                for s in range(n):
                    sf = np.float32(s)
                    for i in range(GG):
                        v = b3[s]
                        for j in range(H):
                            v = v + W3[s, j] * h2[j, i]
                        lg[s, i] = v
                    if ibias != zero:
                        for i in range(GG):
                            if cur[i] == s:
                                lg[s, i] = lg[s, i] + ibias
                    if s == 0:
                        for i in range(GG):
                            best[i] = lg[0, i]
                            second[i] = -np.inf
                            arg[i] = zero
                    else:
                        for i in range(GG):
                            v, bi = lg[s, i], best[i]
                            second[i] = max(second[i], min(bi, v))
                            best[i] = max(bi, v)
                            arg[i] = sf if v > bi else arg[i]
                ties = False
                for i in range(GG):
                    if best[i] - second[i] < thr:
                        ties = True
                        base = (t * GG + i) * n
                        top = -np.inf
                        for s in range(n):
                            # a state more than thr below the best cannot win: its Gumbel lead
                            # would need > 41 (the most our uniforms allow), so skip its draw
                            if best[i] - lg[s, i] >= thr:
                                continue
                            u = _uniform_nb(key, base + s)
                            zs = np.float64(lg[s, i]) / tau - math.log(-math.log(u))
                            if zs > top:
                                top = zs
                                arg[i] = np.float32(s)
                moved = 0
                for i in range(GG):
                    nxt[i] = np.uint8(arg[i])
                    moved += nxt[i] != cur[i]
                # a grid that maps to itself with no near-tie draw stays fixed from now on
                frozen = moved == 0 and not ties
                cur, nxt = nxt, cur
            for i in range(GG):
                state[b, i // G, i % G] = cur[i]

    return kernel


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
        for o in (0, 3, 6):  # one row of the 3x3 window at a time, as the CPU engine's table
            row = T1[rows, o, nb[:, :, o]] + T1[rows, o + 1, nb[:, :, o + 1]]
            h1 = h1 + (row + T1[rows, o + 2, nb[:, :, o + 2]])  # (B, GG, C1)
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
