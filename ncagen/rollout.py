"""Batched NCA trajectories: initial grids and the stochastic update, on CPU or any torch device.

One update (spec section 3) draws  next ~ Categorical(softmax((logits + b*onehot(state)) / tau)).
We sample it as Gumbel-max, `argmax(logits / tau + g)` with g = -log(-log(u)). The uniforms u
are 53-bit grid points (rng.uniform), so every g lies in [-3.63, 36.05] (bar u = 1.0, one draw
in 2**53), and a state more than 39.7 tau below a cell's best logit can never win. The noise is
therefore drawn only for cells whose two best logits are within NEAR_TIE = 41 tau, and there
only for the states within 41 tau of the best: the outcome is the one the full draw would give.
The noise of cell c of step t is a counter-based draw keyed by the row's own seed, so a row
never depends on its batch.

Two engines compute the same arithmetic in the same order (so they agree bit for bit):
- the CPU kernel (`ncagen.kernel`): numba code generated for one network shape; the rows of a
  batch are shared out over threads (the kernel releases the GIL);
- `_advance_torch`: batched elementwise torch ops, for CUDA (or any torch device).
Both sum the 3x3 conv one window row at a time, h1 = ((b1 + r_top) + r_mid) + r_bottom with
r = (T[left] + T[centre]) + T[right], so the CPU engine can look each row's sum up in a per-rule
table indexed by the row's three states (3 lookups per channel instead of 9). The CPU engine
also skips work that cannot change the outcome: a grid that maps to itself with no near-tie
cell is fixed forever (later grids are copies).
`reference_logits` is the spec's network written with conv2d, for tests.

Two internal device names stand in for a GPU, so that tests and benchmarks on a machine without
one take the device path of `ncagen.generate` (its pipeline); no build accepts them:
TORCH_CPU runs the torch engine (the CUDA code) on the CPU, CPU_DEVICE the CPU kernel on one
thread (a rollout stage about as fast as the gzip stage, so the two can be seen to overlap).
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from . import rng
from .config import NCAConfig
from .extras import installed, require
from .jit import njit
from .kernel import load_kernel
from .rules import RuleParams, uniforms
from .threads import pool

NEAR_TIE = 41.0  # in units of tau: above the widest gap a Gumbel draw can close (39.7)
TRIPLE_TABLE_STATES = 16  # up to this alphabet the CPU engine tabulates whole row triples
TORCH_CPU = "torch-cpu"  # stand-in device: the torch engine on the CPU
CPU_DEVICE = "cpu-device"  # stand-in device: the CPU kernel on one thread


def init_state(rule_seeds: np.ndarray, sims: np.ndarray, cfg: NCAConfig) -> np.ndarray:
    """Initial grids (B, G, G) uint8: z ~ N(0, I_n), cells i.i.d. ~ Categorical(softmax(z))."""
    n, G = cfg.states, cfg.grid
    keys = rng.derive_many(np.asarray(rule_seeds, np.int64), rng.STREAM_INIT, np.asarray(sims))
    u = uniforms(keys, 2 * n + G * G)  # (B, 2n + G*G), as rng.uniform draws them
    z = np.sqrt(-2.0 * np.log(u[:, :n])) * np.cos(2.0 * np.pi * u[:, n:2 * n])  # Box-Muller
    p = np.exp(z - z.max(axis=1, keepdims=True))
    cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)  # (B, n)
    return _categorical(u, cdf, 2 * n).reshape(-1, G, G)


@njit
def _categorical(u, cdf, first):  # pragma: no cover - compiled
    """Each cell's state: how many of the first n-1 cdf steps its uniform u[b, first + i]
    exceeds (comparisons only, so exactly numpy's `(u > cdf[:, k]).sum` over k)."""
    B, n = cdf.shape
    cells = np.empty((B, u.shape[1] - first), np.uint8)
    for b in range(B):
        for i in range(cells.shape[1]):
            x = u[b, first + i]
            c = 0
            for k in range(n - 1):
                c += x > cdf[b, k]
            cells[b, i] = c
    return cells


def noise_keys(rule_seeds: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """The key of each trajectory's update noise, (B,) uint64."""
    return rng.derive_many(np.asarray(rule_seeds, np.int64), rng.STREAM_NOISE, np.asarray(sims))


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible (and torch is installed), else 'cpu'; validates
    explicit choices. Only a CUDA choice imports torch."""
    if device == "cpu":
        return "cpu"
    if device != "auto" and not device.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:i], got {device!r}")
    if device == "auto" and not installed("torch"):
        return "cpu"  # the light install: the CPU engine is all there is
    torch = require("torch", "gpu", f"--device {device} (the torch engine)")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but no CUDA GPU is visible")
    return device


def cpu_threads() -> int:
    """Threads the CPU engine uses by default: numba's thread count (the build caps it)."""
    return numba.get_num_threads()


def near_tie_gap(temperature: float) -> np.float32:
    """The gap (float32) between a cell's two best logits below which its Gumbel draw decides."""
    return np.float32(NEAR_TIE * temperature)


def advance(params: RuleParams, state: np.ndarray, keys: np.ndarray, t0: int, t1: int,
            cfg: NCAConfig, out: np.ndarray, rec_offset: int = 0, device: str = "cpu",
            threads: int | None = None) -> np.ndarray:
    """Step grids from time t0 to t1, writing each recorded grid s_t into `out`.

    state: (B, G, G) uint8 grids at time t0; returns the grids at t1.
    out: (B, K, G, G) uint8, C-contiguous; s_t with t = burn_in + k*dt lands in
    out[:, k - rec_offset] when that index is in range. On the CPU, rows are split over
    `threads` threads (default `cpu_threads()`).
    """
    assert out.dtype == np.uint8 and out.flags.c_contiguous, "out must be C-contiguous uint8"
    state = np.ascontiguousarray(state, np.uint8)
    tau = float(cfg.temperature)
    thr = near_tie_gap(tau)
    if device in ("cpu", CPU_DEVICE):
        threads = 1 if device == CPU_DEVICE else threads  # one core, the others for the ratios
        state = state.copy()
        biased = bool(params.b1.any() or params.b2.any() or params.b3.any())  # spec: all zero
        kernel = load_kernel(cfg.states, params.b1.shape[1], params.b2.shape[1], cfg.grid,
                             cfg.identity_bias != 0, cfg.states <= TRIPLE_TABLE_STATES, biased)
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


# torch engine ------------------------------------------------------------------------------
def _neighbour_index(G: int):
    import torch

    ys, xs = torch.meshgrid(torch.arange(G), torch.arange(G), indexing="ij")
    cols = [((ys + dy) % G) * G + (xs + dx) % G for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return torch.stack([c.reshape(-1) for c in cols], dim=1)  # (G*G, 9)


def _network_torch(T1, b1, W2, b2, W3, b3, cur, nbr, identity_bias: float):
    """The network on every cell of a batch: logits (B, GG, n) float32 from the cells' states
    cur (B, GG) and the cells of each one's 3x3 window nbr (GG, 9), with every sum in the CPU
    kernel's order, one rounded product and one rounded add at a time."""
    import torch

    nb = cur[:, nbr]  # (B, GG, 9)
    B, GG = nb.shape[:2]
    n, C1, H = T1.shape[2], T1.shape[3], W2.shape[1]
    rows = torch.arange(B, device=nb.device)[:, None]  # (B, 1)
    h1 = b1[:, None, :].expand(B, GG, C1)
    for o in (0, 3, 6):  # one row of the 3x3 window at a time, as the CPU engine's table
        row = T1[rows, o, nb[:, :, o]] + T1[rows, o + 1, nb[:, :, o + 1]]
        h1 = h1 + (row + T1[rows, o + 2, nb[:, :, o + 2]])  # (B, GG, C1)
    h2 = b2[:, None, :].expand(B, GG, H)
    for c in range(C1):
        h2 = h2 + W2[:, None, :, c] * h1[:, :, c, None]
    h2 = torch.where(h2 > 0, h2, torch.zeros((), dtype=h2.dtype, device=h2.device))  # (B, GG, H)
    lg = b3[:, None, :].expand(B, GG, n)
    for j in range(H):
        lg = lg + W3[:, None, :, j] * h2[:, :, j, None]  # (B, GG, n)
    if identity_bias:
        lg = lg + torch.nn.functional.one_hot(cur, n).to(lg.dtype) * np.float32(identity_bias)
    return lg


@functools.lru_cache(maxsize=None)
def compiled_network():
    """`_network_torch` fused by torch.compile (opt-in: `_advance_torch(engine="compiled")`).

    Eager torch runs ~60 kernels a step, each writing a full (B, G*G, .) temporary; inductor
    fuses them. `emulate_precision_casts` keeps Triton from contracting a product and the add
    after it into one FMA (inductor's C++ backend never does), so the sums keep their rounding.
    On the CPU its grids equal the CPU engine's bit for bit (tests/test_rollout_engines.py), and
    its logits the eager ones (`benchmarks/bench_gpu.py --compile`, which checks both on a GPU
    before it times it). Needs a torch whose inductor knows `emulate_precision_casts` (2.13 does);
    older ones may reject it or contract silently.
    """
    import torch

    return torch.compile(_network_torch, dynamic=True, options={"emulate_precision_casts": True})


ENGINES = ("eager", "compiled", "fused")  # how the torch engine runs a step's network


def _advance_torch(params: RuleParams, state: np.ndarray, keys: np.ndarray, t0: int, t1: int,
                   cfg: NCAConfig, out: np.ndarray, rec_offset: int, device: str,
                   engine: str = "eager") -> np.ndarray:
    """`advance` on a torch device. `engine`: eager torch (what builds use), the opt-in
    `compiled_network`, or the opt-in Triton kernel of `ncagen.gpu_kernel` ("fused")."""
    torch = require("torch", "gpu", "the torch rollout engine")
    assert engine in ENGINES, engine

    dev = torch.device("cpu" if device == TORCH_CPU else device)
    tt = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)  # noqa: E731
    weights = [tt(a) for a in (params.offset_table(), params.b1, params.w2, params.b2, params.w3,
                               params.b3)]
    B, G, n = state.shape[0], cfg.grid, cfg.states
    GG, K = G * G, out.shape[1]
    keys_t = tt(np.asarray(keys, np.uint64).view(np.int64))
    nbr = _neighbour_index(G).to(dev)
    cur = tt(state).long().reshape(B, GG)
    thr = torch.tensor(near_tie_gap(cfg.temperature), device=dev)  # float32
    tau = float(cfg.temperature)
    if engine == "fused":
        from .gpu_kernel import fused_step

        step = fused_step(weights, nbr, n, G, cfg.identity_bias, thr.item())
    else:
        network = compiled_network() if engine == "compiled" else _network_torch

        def step(cur):  # (logits (B, GG, n), argmax (B, GG), near ties (B, GG))
            lg = network(*weights, cur, nbr, float(cfg.identity_bias))
            top2 = lg.topk(2, dim=-1).values
            return lg, lg.argmax(dim=-1), (top2[..., 0] - top2[..., 1]) < thr
    for t in range(t0, t1 + 1):
        if t >= cfg.burn_in and (t - cfg.burn_in) % cfg.dt == 0:
            k = (t - cfg.burn_in) // cfg.dt - rec_offset
            if 0 <= k < K:
                out[:, k] = cur.to(torch.uint8).cpu().numpy().reshape(B, G, G)
        if t == t1:
            break
        lg, nxt, near = step(cur)
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
