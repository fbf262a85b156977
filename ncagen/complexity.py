"""Complexity of a trajectory: the gzip ratio of its first grids (spec section 6), and zstd's.

ratio = len(gzip(tokens as little-endian int32, level 9)) / len(raw bytes), over the patch tokens
(no delimiters) of the first `ratio_grids` recorded grids. zlib with wbits=31 writes the same
10-byte header and 8-byte trailer as `gzip.compress`, so the sizes are identical, without the
gzip module's Python-level framing. Batches are compressed on a thread pool: zlib and zstandard
release the GIL, so every core works.

Most of a filter's cost is that exact gzip call, so `band_ratios` skips it where a sound upper
bound on the size already puts the ratio at or below the band's low edge (frozen, uniform and
cycling trajectories: about a tenth of random rules at n = 10). See `periodic_size_bound`.
"""

from __future__ import annotations

import zlib

import numba
import numpy as np

from .config import NCAConfig
from .threads import default_workers, pool
from .tokens import from_sequence


def gzip_size(data: bytes, level: int = 9) -> int:
    """Size of a plain gzip member of `data` (as len(gzip.compress(data, level)))."""
    return len(zlib.compress(data, level, 31))


def ratio_bytes(patch_tokens: np.ndarray) -> np.ndarray:
    """Patch tokens (B, R, P) -> their int32 little-endian serialisation, (B, R*P*4) uint8."""
    B, width = patch_tokens.shape[0], int(np.prod(patch_tokens.shape[1:]))
    return np.ascontiguousarray(patch_tokens, dtype="<i4").reshape(B, width).view(np.uint8)


def _map_rows(fn, raw: np.ndarray, workers: int) -> np.ndarray:
    """Apply fn(buffer) -> int to each row of raw (B, L) on `workers` threads, in chunks."""
    B, L = raw.shape
    if B == 0:
        return np.zeros(0, np.int64)
    flat = memoryview(np.ascontiguousarray(raw).reshape(-1))  # rows as slices, no copies
    cuts = [B * k // min(workers, B) for k in range(min(workers, B) + 1)]
    work = lambda lo, hi: [fn(flat[i * L:(i + 1) * L]) for i in range(lo, hi)]  # noqa: E731
    if len(cuts) > 2:
        parts = list(pool(workers, "ncagen-zip").map(work, cuts[:-1], cuts[1:]))
    else:
        parts = [work(0, B)]
    return np.array([s for part in parts for s in part], np.int64)


def gzip_ratios(patch_tokens: np.ndarray, level: int = 9, workers: int | None = None) -> np.ndarray:
    """gzip ratio of each row of patch tokens (B, R, P) as float32."""
    raw = ratio_bytes(patch_tokens)
    sizes = _map_rows(lambda b: len(zlib.compress(b, level, 31)), raw, workers or default_workers())
    return (sizes / raw.shape[1]).astype(np.float32)


# a sound upper bound on zlib's size for data with a periodic tail ------------------------------
# Why it holds (zlib 1.x, level 9, default strategy and memLevel, as `gzip.compress` uses):
# 1. Data under 16,383 bytes is one block (deflate_slow flushes only when its symbol buffer of
#    lit_bufsize - 1 = 16,383 symbols fills, or at the end), and zlib sends it stored, with fixed
#    or with dynamic codes, whichever is smallest for its own parse; so the block is at most the
#    fixed-code cost of that parse plus the 3-bit header, padded to a byte.
# 2. In the fixed code a literal costs 8 bits (bytes 0-143) or 9 bits; a match of length L >= 3 at
#    a distance under 2,048 costs at most 7-8 + 5 (length) + 5 + 10 (distance) bits, never more
#    than its L bytes cost as literals. So the symbols that start before S0 cost at most the
#    literal costs of the bytes before S0, plus one match (at most 31 bits) that runs past S0.
# 3. The tail: x[s] = x[s - P] for every s >= S0, with S0 >= P and P <= 1,024 bytes. At any s >=
#    S0 the match at distance P runs to min(258, n - s); zlib's hash chain reaches it (at most
#    P - 1 < 1,024 younger positions come first, the shortest chain level 9 walks), so the match
#    it finds is that long, at distance <= P (it keeps the first longest, searching from the
#    nearest). Lazy evaluation never defers it: the match at s + 1 is at most n - s - 1 long. So
#    from the first symbol at or after S0 on, zlib emits matches of min(258, n - s) bytes, each at
#    most 13 (length) + 5 + extra(P) bits, and at most 2 literals at the very end.
# The bound is the sum plus the 18 bytes of gzip framing and one byte of slack;
# tests/test_complexity.py checks it against zlib on hundreds of thousands of real candidates.
BOUND_MAX_BYTES = 2048  # distances stay under 2,048 (step 2) and the data one block (step 1)
BOUND_MAX_PERIOD = 1024  # bytes (step 3)


def bound_applies(level: int, nbytes: int) -> bool:
    """Whether `periodic_size_bound` is proven for this level, length and zlib build."""
    version = zlib.ZLIB_RUNTIME_VERSION
    return (level == 9 and nbytes <= BOUND_MAX_BYTES and version.startswith("1.")
            and "ng" not in version)  # zlib-ng parses differently


def _distance_extra_bits(d: int) -> int:
    """Extra bits of a deflate distance d (codes 0-3: none; then 1 more every doubling)."""
    return 0 if d <= 4 else (d - 1).bit_length() - 2


@numba.njit(cache=True, nogil=True)
def _periodic_bounds(tokens, periods, extra_bits):  # pragma: no cover - compiled
    """Upper bounds on the gzip size of each row of int32 tokens (B, T) (see above)."""
    B, T = tokens.shape
    n = 4 * T
    out = np.full(B, np.iinfo(np.int64).max, np.int64)
    cost = np.empty(T + 1, np.int64)  # cost[t]: literal cost of the first t tokens' bytes
    for b in range(B):
        row = tokens[b]
        costed = False
        for k in range(periods.size):
            p = periods[k]
            t = T - 1
            while t >= p and row[t] == row[t - p]:
                t -= 1
            s0_tok = p if t < p else t + 1  # tokens from s0_tok on equal their copy p back
            if s0_tok >= T:
                continue  # no periodic tail at this period
            if not costed:
                cost[0] = 0
                for i in range(T):
                    v, c = row[i], 0
                    for _ in range(4):
                        c += 8 if (v & 0xFF) < 144 else 9
                        v >>= 8
                    cost[i + 1] = cost[i] + c
                costed = True
            tail = (n - 4 * s0_tok + 257) // 258
            bits = 3 + cost[s0_tok] + 31 + tail * (18 + extra_bits[k]) + 2 * 9 + 7
            size = 18 + (bits + 7) // 8 + 1
            if size < out[b]:
                out[b] = size
    return out


def periodic_size_bound(patch_tokens: np.ndarray) -> np.ndarray:
    """An upper bound (int64, >= the exact size) on the gzip size of each row's ratio bytes."""
    B, R, P = patch_tokens.shape
    periods = [p for p in (*range(1, 9), *(P * g for g in range(1, R))) if 4 * p <= BOUND_MAX_PERIOD]
    periods = np.array(sorted(set(periods)), np.int64)
    extra = np.array([_distance_extra_bits(4 * int(p)) for p in periods], np.int64)
    tokens = np.ascontiguousarray(patch_tokens.reshape(B, R * P), dtype=np.int32)
    return _periodic_bounds(tokens, periods, extra)


def band_ratios(patch_tokens: np.ndarray, lo: float, level: int = 9,
                workers: int | None = None) -> np.ndarray:
    """gzip ratios of each row (float32), NaN where the exact ratio is certainly <= lo, so
    the row is certainly not in a band LO-HI (no gzip call is made for those rows)."""
    raw = ratio_bytes(patch_tokens)
    n = raw.shape[1]
    out = np.full(len(raw), np.nan, np.float32)
    if lo > 0 and len(raw) and bound_applies(level, n):
        bound = (periodic_size_bound(patch_tokens) / n).astype(np.float32)
        todo = np.flatnonzero(~(bound <= np.float32(lo)))  # the band's own float32 edge test
    else:
        todo = np.arange(len(raw))
    sizes = _map_rows(lambda b: len(zlib.compress(b, level, 31)), raw[todo], workers or default_workers())
    out[todo] = (sizes / n).astype(np.float32)
    return out


def zstd_ratios(patch_tokens: np.ndarray, level: int = 3, workers: int | None = None) -> np.ndarray:
    """zstd ratio (one frame, default parameters at `level`) of each row, float32."""
    import zstandard

    raw = ratio_bytes(patch_tokens)
    workers = workers or default_workers()
    local = {}

    def size(b: bytes) -> int:
        import threading

        tid = threading.get_ident()
        if tid not in local:  # a ZstdCompressor must not be shared between threads
            local[tid] = zstandard.ZstdCompressor(level=level)
        return len(local[tid].compress(b))

    return (_map_rows(size, raw, workers) / max(raw.shape[1], 1)).astype(np.float32)


def gzip_ratio_of_row(input_ids, cfg: NCAConfig) -> float:
    """Recompute a row's gzip ratio from its input_ids alone (float32, as stored)."""
    patches = from_sequence(input_ids, cfg)[:cfg.ratio_grids]
    return float(gzip_ratios(patches[None], cfg.gzip_level, workers=1)[0])
