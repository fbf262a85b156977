"""Patch tokens: grids <-> token sequences, exactly invertible (spec section 5).

A p x p patch with cells c_0..c_{p*p-1} (row-major inside the patch) is the token
sum_k c_k * n**k; patches are read row-major over the grid. A sequence is, per recorded grid,
GRID_START, its patch tokens, GRID_END, cut to seq_len. Works on numpy arrays and torch tensors.
"""

from __future__ import annotations

import functools

import numpy as np

from .config import NCAConfig
from .jit import njit


def _permute(x, axes):
    return x.permute(*axes) if hasattr(x, "permute") else x.transpose(axes)


def encode_grids(grids, n: int, patch: int):
    """Grids (..., G, G) -> patch tokens (..., (G/p)**2), int64."""
    G = grids.shape[-1]
    q, lead = G // patch, grids.shape[:-2]
    if isinstance(grids, np.ndarray) and grids.dtype == np.uint8:
        flat = np.ascontiguousarray(grids).reshape(-1, G, G)
        return _encode_kernel(n, patch)(flat).reshape(*lead, q * q)
    x = grids.reshape(*lead, q, patch, q, patch)
    x = _permute(x, (*range(len(lead)), len(lead), len(lead) + 2, len(lead) + 1, len(lead) + 3))
    x = x.reshape(*lead, q * q, patch * patch)  # (..., P, p*p) cells c_0..c_{p*p-1}
    if hasattr(x, "permute"):
        import torch

        weights = n ** torch.arange(patch * patch, device=x.device, dtype=torch.int64)
        return (x.long() * weights).sum(-1)
    return (x.astype(np.int64) * (n ** np.arange(patch * patch, dtype=np.int64))).sum(-1)


def _encode_kernel(n: int, patch: int):
    """encode_grids for uint8 grids (M, G, G): the compiled encoder, with this alphabet's weights.

    One compiled function for every alphabet, the weights an argument: numba's disk cache
    then holds one entry per argument type. (A closure compiled per alphabet, as before, gave
    every alphabet's entry the same symbol name, and a process that loaded two of them from the
    cache could crash.)"""
    weights = n ** np.arange(patch * patch, dtype=np.int64)  # c_k's weight, k row by row
    return functools.partial(_encode_patches, weights=weights, patch=patch)


@njit  # module level: a closure's disk cache never hits
def _encode_patches(grids, weights, patch):  # pragma: no cover - compiled
    M, G = grids.shape[0], grids.shape[1]
    q = G // patch
    out = np.empty((M, q * q), np.int64)
    if patch == 2:  # the spec's patch, written out: twice as fast as the loops below
        w0, w1, w2, w3 = weights[0], weights[1], weights[2], weights[3]
        for m in range(M):
            for py in range(q):
                for px in range(q):
                    y, x = 2 * py, 2 * px
                    out[m, py * q + px] = (np.int64(grids[m, y, x]) * w0
                                           + np.int64(grids[m, y, x + 1]) * w1
                                           + np.int64(grids[m, y + 1, x]) * w2
                                           + np.int64(grids[m, y + 1, x + 1]) * w3)
        return out
    for m in range(M):
        for py in range(q):
            for px in range(q):
                tok = np.int64(0)
                for dy in range(patch):
                    for dx in range(patch):
                        cell = grids[m, py * patch + dy, px * patch + dx]
                        tok += np.int64(cell) * weights[dy * patch + dx]
                out[m, py * q + px] = tok
    return out


def decode_grids(tokens, n: int, patch: int, grid: int) -> np.ndarray:
    """Patch tokens (..., (G/p)**2) -> grids (..., G, G) uint8; the inverse of encode_grids."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= n ** (patch * patch)):
        raise ValueError("token out of range for this alphabet and patch size")
    q, lead = grid // patch, tokens.shape[:-1]
    cells = (tokens[..., None] // (n ** np.arange(patch * patch, dtype=np.int64))) % n  # (..., P, p*p)
    x = cells.reshape(*lead, q, q, patch, patch)
    k = len(lead)
    x = x.transpose(*range(k), k, k + 2, k + 1, k + 3).reshape(*lead, grid, grid)
    return x.astype(np.uint8)


def to_sequence(patch_tokens: np.ndarray, cfg: NCAConfig) -> np.ndarray:
    """Patch tokens (B, T, P) of T recorded grids -> input_ids (B, seq_len) int32 with delimiters."""
    B, T, _ = patch_tokens.shape
    framed = np.empty((B, T, cfg.tokens_per_grid), np.int32)
    framed[:, :, 0] = cfg.grid_start
    framed[:, :, 1:-1] = patch_tokens
    framed[:, :, -1] = cfg.grid_end
    flat = framed.reshape(B, T * cfg.tokens_per_grid)
    assert flat.shape[1] >= cfg.seq_len, "not enough grids for one sequence"
    return np.ascontiguousarray(flat[:, :cfg.seq_len])


def to_sequence_of(head: np.ndarray, tail: np.ndarray, cfg: NCAConfig) -> np.ndarray:
    """to_sequence of head's grids then tail's, (B, T1, P) and (B, T2, P), in one compiled pass
    (no concatenated or framed copies in between)."""
    B, T1, P = head.shape
    assert tail.shape[0] == B and tail.shape[2] == P, "head and tail rows do not match"
    assert (T1 + tail.shape[1]) * cfg.tokens_per_grid >= cfg.seq_len, "not enough grids for one sequence"
    out = np.empty((B, cfg.seq_len), np.int32)
    _frame(np.ascontiguousarray(head), np.ascontiguousarray(tail), cfg.grid_start, cfg.grid_end,
           out)
    return out


@njit
def _frame(head, tail, start, end, out):  # pragma: no cover - compiled
    B, T1, P = head.shape
    T2, L = tail.shape[1], out.shape[1]
    for b in range(B):
        k = 0
        for t in range(T1 + T2):
            if k >= L:
                break
            out[b, k] = start
            k += 1
            for j in range(P):
                if k >= L:
                    break
                out[b, k] = head[b, t, j] if t < T1 else tail[b, t - T1, j]
                k += 1
            if k < L:
                out[b, k] = end
                k += 1


def from_sequence(input_ids, cfg: NCAConfig) -> np.ndarray:
    """input_ids (seq_len,) -> the patch tokens (T, P) of its complete grids, delimiters checked."""
    ids = np.asarray(input_ids, dtype=np.int64)
    T = len(ids) // cfg.tokens_per_grid
    framed = ids[:T * cfg.tokens_per_grid].reshape(T, cfg.tokens_per_grid)
    if (framed[:, 0] != cfg.grid_start).any() or (framed[:, -1] != cfg.grid_end).any():
        raise ValueError("sequence is not framed by GRID_START/GRID_END where expected")
    return framed[:, 1:-1]


def decode_sequence(input_ids, cfg: NCAConfig) -> np.ndarray:
    """input_ids -> the sequence's complete grids (T, G, G) uint8."""
    return decode_grids(from_sequence(input_ids, cfg), cfg.states, cfg.patch, cfg.grid)


def render_strip(grids: np.ndarray, n: int, scale: int = 8, gap: int = 2):
    """Grids (T, G, G) -> a PIL image: the grids left to right, one colour per state."""
    from PIL import Image

    palette = _palette(n)
    T, G, _ = grids.shape
    width = T * G * scale + (T - 1) * gap
    canvas = np.full((G * scale, width, 3), 255, np.uint8)
    for t in range(T):
        tile = palette[grids[t]].repeat(scale, 0).repeat(scale, 1)
        x0 = t * (G * scale + gap)
        canvas[:, x0:x0 + G * scale] = tile
    return Image.fromarray(canvas)


def _palette(n: int) -> np.ndarray:
    """n distinct RGB colours, evenly spaced in hue."""
    import colorsys

    return np.array([[round(255 * v) for v in colorsys.hsv_to_rgb(k / n, 0.75, 0.95)]
                     for k in range(n)], np.uint8)
