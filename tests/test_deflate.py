"""deflate.gzip_sizes is zlib's size exactly, and its band bound never drops a row in the band.

zlib itself (the `zlib` module, the library `gzip.compress` calls) is the reference throughout:
the spec defines the ratio by its output size.
"""

import gzip
import heapq
import zlib

import numpy as np
import pytest

from ncagen import complexity, deflate
from ncagen.config import Band, NCAConfig
from ncagen.generate import candidate_seeds, rollout_tokens


def zlib_sizes(raw: np.ndarray, level: int = 9) -> np.ndarray:
    return np.array([len(zlib.compress(r.tobytes(), level, 31)) for r in raw], np.int64)


def candidates(states: int, count: int, key: int = 4242) -> np.ndarray:
    """The ratio bytes of `count` real candidates of an alphabet, (count, 1440) uint8."""
    cfg = NCAConfig(states=states)
    seeds, sims = candidate_seeds(key + states, 0, count, 1)
    tokens, _, _ = rollout_tokens(cfg, seeds, sims, cfg.ratio_grids)
    return complexity.ratio_bytes(tokens)


@pytest.mark.parametrize("states", [2, 5, 10, 15, 20])
def test_sizes_of_real_candidates_are_zlibs(states):
    raw = candidates(states, 1500)
    got = deflate.gzip_sizes(raw)
    assert np.array_equal(got, zlib_sizes(raw))
    assert got[0] == len(gzip.compress(raw[0].tobytes(), compresslevel=9))


def test_sizes_at_the_other_lazy_levels_are_zlibs():
    raw = candidates(10, 400)
    for level in (4, 5, 6, 7, 8):
        assert np.array_equal(deflate.gzip_sizes(raw, level), zlib_sizes(raw, level)), level


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 17, 258, 259, 1440, 4097, 16_382])
def test_sizes_of_adversarial_buffers_are_zlibs(length):
    """Random bytes of small and full alphabets (stored blocks, fixed codes, length-limited
    trees), constant and periodic runs with flipped bytes (258-byte matches, long hash chains),
    and random binary with copied stretches (the shortened chain of zlib's search after a good
    match, where the chain limit can bind)."""
    rng = np.random.default_rng(length)
    rows = [rng.integers(0, alphabet, (6, length), dtype=np.uint8) for alphabet in (1, 2, 3, 10, 256)]
    for period in (1, 2, 3, 4, 7, 36, 144, 1000):
        base = rng.integers(0, 256, (4, period), dtype=np.uint8)
        tiled = np.tile(base, (1, length // period + 1))[:, :length].copy()
        tiled[:2, rng.integers(0, length, 2)] ^= 1
        rows.append(tiled)
    binary = rng.integers(0, 2, (4, length), dtype=np.uint8)
    for row in binary:
        for _ in range(length // 200):
            n = int(rng.integers(32, 200))
            if length > 2 * n:
                src, dst = sorted(rng.integers(0, length - n, 2))
                row[dst:dst + n] = row[src:src + n]
    rows.append(binary)
    raw = np.concatenate(rows)
    assert np.array_equal(deflate.gzip_sizes(raw), zlib_sizes(raw))


def huffman_depth(counts) -> int:
    """Depth of an unlimited Huffman tree on the nonzero counts."""
    heap = [(c, 0) for c in counts if c]
    heapq.heapify(heap)
    while len(heap) > 1:
        (a, da), (b, db) = heapq.heappop(heap), heapq.heappop(heap)
        heapq.heappush(heap, (a + b, max(da, db) + 1))
    return heap[0][1]


def test_trees_with_ties_and_length_limits_are_zlibs():
    """Huffman trees where zlib's choices are easy to get wrong, at three lazy levels:
    - a literal tree deeper than zlib's 15 bits, so its length-limit repair runs: one byte of each
      count 1, 2, 3, 5, 8, ... (the end-of-block code is the only other 1) under 70-90 equally
      frequent bytes, which leave the parse few repeats to take (16 of these 180 rows overflow
      after the parse; the code-length tree's 7-bit repair runs in the real candidates' test);
    - many symbols of equal counts: which of two equal nodes zlib's heap gives first decides the
      code lengths, and so the header."""
    fib = [1, 1]
    while len(fib) < 14:
        fib.append(fib[-1] + fib[-2])
    by_length: dict[int, list[np.ndarray]] = {}
    for uniform in (70, 90):
        for chain in (11, 12, 13):
            for seed in range(30):
                rng = np.random.default_rng(seed)
                symbols = rng.permutation(256).astype(np.uint8)
                counts = fib[1:chain]
                row = np.concatenate([np.repeat(symbols[:chain - 1], counts),
                                      rng.choice(symbols[chain:chain + uniform],
                                                 16_382 - sum(counts))])
                rng.shuffle(row)
                # the row's byte counts alone (and the end-of-block code) ask for more than 15 bits
                assert huffman_depth([*np.bincount(row, minlength=256), 1]) > 15
                by_length.setdefault(len(row), []).append(row)
    rng = np.random.default_rng(7)
    for length in (300, 1440, 16_382):
        for k in (2, 3, 50, 255):
            for _ in range(6):
                row = np.resize(rng.choice(256, k, replace=False).astype(np.uint8), length)
                rng.shuffle(row)
                by_length.setdefault(length, []).append(row)
    for rows in by_length.values():
        raw = np.stack(rows)
        for level in (9, 6, 4):
            assert np.array_equal(deflate.gzip_sizes(raw, level), zlib_sizes(raw, level)), level


def test_outside_its_reach_it_asks_zlib():
    raw = np.random.default_rng(1).integers(0, 4, (3, deflate.MAX_EXACT + 1), dtype=np.uint8)
    assert np.array_equal(deflate.gzip_sizes(raw), zlib_sizes(raw))
    small = candidates(10, 20)
    for level in (1, 3):  # zlib's greedy levels: not the lazy parse
        assert np.array_equal(deflate.gzip_sizes(small, level), zlib_sizes(small, level))


@pytest.mark.parametrize("states", [5, 10, 15])
def test_the_band_bound_never_drops_a_row_of_the_band(states):
    raw = candidates(states, 3000, key=99)
    exact = zlib_sizes(raw)
    ratios = (exact / raw.shape[1]).astype(np.float32)
    for lo, hi in ((0.3, 0.4), (0.5, 1.0), (0.2, 0.3), (0.4, 0.5)):
        got = deflate.gzip_sizes(raw, 9, (lo, hi))
        skipped = got < 0
        assert not (skipped & Band(lo, hi).mask(ratios)).any()
        assert np.array_equal(got[~skipped], exact[~skipped])
        if (states, lo) == (10, 0.3):  # the bound earns its place: most of the band's rejects
            assert skipped.mean() > 0.6


def test_gzip_ratios_with_a_band_keep_the_same_rows():
    cfg = NCAConfig()
    seeds, sims = candidate_seeds(7, 0, 2000, 1)
    tokens, _, _ = rollout_tokens(cfg, seeds, sims, cfg.ratio_grids)
    reference = complexity.zlib_gzip_ratios(tokens)
    assert np.array_equal(complexity.gzip_ratios(tokens, workers=2), reference)
    band = Band(0.3, 0.4)
    bounded = complexity.gzip_ratios(tokens, workers=2, band=band)
    assert np.isnan(bounded).any()
    assert np.array_equal(band.mask(bounded), band.mask(reference))
    known = ~np.isnan(bounded)
    assert np.array_equal(bounded[known], reference[known])
