"""Counter-based random numbers: every draw is a pure function of (key, counter).

A row's randomness (its rule's weights, its initial grid, the noise of each update) comes from
64-bit keys derived from the row's recorded seeds, and each individual number is
`splitmix64(key + (counter + 1) * GOLDEN)`. Nothing depends on batch size, batch order or device,
so any row can be regenerated on its own from its seeds, and rows in one batch never share a
stream. The same hash exists for numpy/numba (uint64) and for torch (int64 with wrap-around).
"""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_INV53 = 2.0**-53

# Streams drawn from one rule seed; distinct constants keep them independent.
STREAM_PARAMS = 1
STREAM_INIT = 2
STREAM_NOISE = 3


def splitmix64(x):
    """The splitmix64 finaliser on uint64 scalars or arrays (wraps mod 2**64)."""
    z = x
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def derive(*parts: int) -> np.uint64:
    """Hash a sequence of non-negative integers into one 64-bit key."""
    with np.errstate(over="ignore"):
        key = np.uint64(0x6E636167656E2031)  # "ncagen 1"
        for p in parts:
            key = splitmix64(key ^ splitmix64(np.uint64(int(p) & 0xFFFFFFFFFFFFFFFF) + GOLDEN))
    return key


def derive_many(keys: np.ndarray, *parts) -> np.ndarray:
    """Hash each key in an array together with further parts (integers or integer arrays)."""
    out = np.asarray(keys).astype(np.uint64)
    with np.errstate(over="ignore"):
        for p in parts:
            out = splitmix64(out ^ splitmix64(np.asarray(p).astype(np.uint64) + GOLDEN))
    return out


def bits(keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """64 random bits for each (key, counter) pair, broadcasting."""
    with np.errstate(over="ignore"):
        return splitmix64(np.asarray(keys, np.uint64) + (np.asarray(counters, np.uint64) + np.uint64(1)) * GOLDEN)


def uniform(keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """Uniform float64 draws in the open interval (0, 1), one per (key, counter)."""
    return ((bits(keys, counters) >> _S11).astype(np.float64) + 0.5) * _INV53


def seed_of(key: np.ndarray) -> np.ndarray:
    """A key as a non-negative int64 seed (the top bit cleared), the form rows record."""
    return (np.asarray(key, np.uint64) & np.uint64(0x7FFFFFFFFFFFFFFF)).astype(np.int64)


# torch twins -------------------------------------------------------------------------------
def _as_signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


_T_GOLDEN = _as_signed(int(GOLDEN))
_T_M1 = _as_signed(int(_M1))
_T_M2 = _as_signed(int(_M2))


def _srl(z, s: int):
    """Logical right shift of int64 tensors."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def splitmix64_torch(z):
    """splitmix64 on int64 torch tensors; bit-identical to the uint64 version."""
    z = (z ^ _srl(z, 30)) * _T_M1
    z = (z ^ _srl(z, 27)) * _T_M2
    return z ^ _srl(z, 31)


def uniform_torch(keys, counters):
    """Torch twin of `uniform`: keys and counters are int64 tensors, the result float64."""
    import torch

    z = splitmix64_torch(keys + (counters + 1) * _T_GOLDEN)
    return (_srl(z, 11).to(torch.float64) + 0.5) * _INV53
