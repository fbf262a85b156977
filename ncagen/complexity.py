"""Complexity of a trajectory: the gzip ratio of its first grids (spec section 6), and zstd's.

ratio = len(gzip(tokens as little-endian int32, level 9)) / len(raw bytes), over the patch tokens
(no delimiters) of the first `ratio_grids` recorded grids. The generator takes the size from
`deflate.gzip_sizes`, which computes zlib's exact size without compressing (and, given a band,
may skip rows a bound puts outside it); `zlib_gzip_ratios` asks zlib itself (wbits=31 writes the
same 10-byte header and 8-byte trailer as `gzip.compress`), the reference the tests and the
benchmarks' gzip floor use. Batches are split over a thread pool: the kernel, zlib and zstandard
release the GIL, so every core works.
"""

from __future__ import annotations

import zlib

import numpy as np

from . import deflate
from .config import Band, NCAConfig
from .threads import default_workers, pool
from .tokens import from_sequence


def gzip_size(data: bytes, level: int = 9) -> int:
    """Size of a plain gzip member of `data` (as len(gzip.compress(data, level)))."""
    return len(zlib.compress(data, level, 31))


def ratio_bytes(patch_tokens: np.ndarray) -> np.ndarray:
    """Patch tokens (B, R, P) -> their int32 little-endian serialisation, (B, R*P*4) uint8."""
    B, width = patch_tokens.shape[0], int(np.prod(patch_tokens.shape[1:]))
    return np.ascontiguousarray(patch_tokens, dtype="<i4").reshape(B, width).view(np.uint8)


def _map_rows(make, raw: np.ndarray, workers: int) -> np.ndarray:
    """fn(buffer) -> int for each row of raw (B, L), on `workers` threads in chunks; each chunk
    calls make() once for its own fn (a compressor must not be shared between threads)."""
    B, L = raw.shape
    if B == 0:
        return np.zeros(0, np.int64)
    flat = memoryview(np.ascontiguousarray(raw).reshape(-1))  # rows as slices, no copies

    def work(lo: int, hi: int) -> list[int]:
        fn = make()
        return [fn(flat[i * L:(i + 1) * L]) for i in range(lo, hi)]

    cuts = [B * k // min(workers, B) for k in range(min(workers, B) + 1)]
    if len(cuts) > 2:
        parts = list(pool(workers, "ncagen-zip").map(work, cuts[:-1], cuts[1:]))
    else:
        parts = [work(0, B)]
    return np.array([s for part in parts for s in part], np.int64)


def _map_chunks(fn, raw: np.ndarray, workers: int) -> np.ndarray:
    """fn(rows) -> int64 per row, over raw (B, L) cut into one chunk per thread."""
    B = raw.shape[0]
    parts = max(1, min(workers, B // 64))  # a chunk of fewer rows is not worth a thread
    if parts == 1:
        return fn(raw)
    cuts = [B * k // parts for k in range(parts + 1)]
    done = pool(parts, "ncagen-zip").map(lambda lo, hi: fn(raw[lo:hi]), cuts[:-1], cuts[1:])
    return np.concatenate(list(done))


def gzip_ratios(patch_tokens: np.ndarray, level: int = 9, workers: int | None = None,
                band: Band | None = None) -> np.ndarray:
    """gzip ratio of each row of patch tokens (B, R, P) as float32.

    Given a band, a row that a bound puts surely outside it gets NaN instead of its ratio
    (`band.mask` is False for it, as for its exact ratio)."""
    raw = ratio_bytes(patch_tokens)
    edges = (0.0, 1.0) if band is None else (band.lo, band.hi)
    sizes = _map_chunks(lambda rows: deflate.gzip_sizes(rows, level, edges), raw,
                        workers or default_workers())
    ratios = (sizes / raw.shape[1]).astype(np.float32)
    ratios[sizes < 0] = np.nan
    return ratios


def zlib_gzip_ratios(patch_tokens: np.ndarray, level: int = 9, workers: int | None = None
                     ) -> np.ndarray:
    """gzip_ratios by zlib itself: the reference (and the time zlib takes)."""
    raw = ratio_bytes(patch_tokens)
    sizes = _map_rows(lambda: lambda b: len(zlib.compress(b, level, 31)), raw,
                      workers or default_workers())
    return (sizes / raw.shape[1]).astype(np.float32)


def zstd_ratios(patch_tokens: np.ndarray, level: int = 3, workers: int | None = None) -> np.ndarray:
    """zstd ratio (one frame, default parameters at `level`) of each row, float32."""
    import zstandard

    raw = ratio_bytes(patch_tokens)

    def make():
        compress = zstandard.ZstdCompressor(level=level).compress
        return lambda b: len(compress(b))

    return (_map_rows(make, raw, workers or default_workers()) / max(raw.shape[1], 1)
            ).astype(np.float32)


def gzip_ratio_of_row(input_ids, cfg: NCAConfig) -> float:
    """Recompute a row's gzip ratio from its input_ids alone (float32, as stored)."""
    patches = from_sequence(input_ids, cfg)[:cfg.ratio_grids]
    return float(gzip_ratios(patches[None], cfg.gzip_level, workers=1)[0])
