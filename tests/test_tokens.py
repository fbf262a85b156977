"""Patch tokens: the spec's layout, exact inversion, and the sequence framing."""

import numpy as np
import pytest
import torch

from ncagen.config import NCAConfig
from ncagen.tokens import (decode_grids, decode_sequence, encode_grids, from_sequence,
                           render_strip, to_sequence, to_sequence_of)


def test_patch_layout_matches_spec():
    g = np.zeros((4, 4), np.uint8)
    g[0, 0], g[0, 1], g[1, 0], g[1, 1] = 1, 2, 3, 4  # top-left patch: c0..c3
    g[0, 2] = 7  # second patch (top-right), its c0
    g[2, 0] = 9  # third patch (bottom-left), its c0
    tok = encode_grids(g, 10, 2)
    assert tok.tolist() == [1 + 2 * 10 + 3 * 100 + 4 * 1000, 7, 9, 0]


@pytest.mark.parametrize("n, patch, grid", [(2, 2, 12), (10, 2, 12), (15, 3, 12), (20, 2, 8)])
def test_decode_inverts_encode(n, patch, grid):
    rng = np.random.default_rng(n)
    grids = rng.integers(0, n, (5, 3, grid, grid)).astype(np.uint8)
    tokens = encode_grids(grids, n, patch)
    assert tokens.max() < n ** (patch * patch)
    assert np.array_equal(decode_grids(tokens, n, patch, grid), grids)
    # the torch path gives the same tokens
    assert np.array_equal(encode_grids(torch.from_numpy(grids), n, patch).numpy(), tokens)


def test_sequence_framing_and_cut():
    cfg = NCAConfig()
    rng = np.random.default_rng(0)
    grids = rng.integers(0, 10, (2, cfg.grids_per_sequence, 12, 12)).astype(np.uint8)
    ids = to_sequence(encode_grids(grids, 10, 2), cfg)
    assert ids.shape == (2, 1024) and ids.dtype == np.int32
    assert ids[0, 0] == cfg.grid_start and ids[0, 37] == cfg.grid_end
    assert ids[0, -1] != cfg.grid_end  # the 27th grid is cut short by 2 tokens
    back = decode_sequence(ids[1], cfg)
    assert back.shape == (26, 12, 12)
    assert np.array_equal(back, grids[1, :26])


@pytest.mark.parametrize("seq_len", [380, 381, 417, 418, 1024, 1026])
@pytest.mark.parametrize("states", [2, 10])
def test_sequence_of_head_and_tail_is_the_concatenated_sequence(seq_len, states):
    """The generator frames a row's head grids and tail grids in one pass: the same ids as
    framing their concatenation, wherever seq_len cuts (inside a grid, on a delimiter)."""
    cfg = NCAConfig(states=states, seq_len=seq_len)
    rng = np.random.default_rng(seq_len)
    grids = -(-seq_len // cfg.tokens_per_grid) + 1  # one grid more than needed
    tokens = rng.integers(0, states ** 4, (7, grids, 36))
    head, tail = tokens[:, :10], tokens[:, 10:]
    want = to_sequence(np.concatenate([head, tail], axis=1), cfg)
    got = to_sequence_of(head, tail, cfg)
    assert got.dtype == np.int32 and got.shape == (7, seq_len)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(from_sequence(got[0], cfg), tokens[0, :seq_len // 38])


def test_from_sequence_rejects_bad_framing():
    cfg = NCAConfig()
    ids = np.zeros(1024, np.int64)
    with pytest.raises(ValueError, match="GRID_START"):
        from_sequence(ids, cfg)


def test_render_strip_size():
    grids = np.random.default_rng(0).integers(0, 10, (3, 12, 12)).astype(np.uint8)
    img = render_strip(grids, 10, scale=4, gap=2)
    assert img.size == (3 * 48 + 2 * 2, 48)


def test_alphabets_share_one_cached_encoder(tmp_path):
    """Processes that encode different alphabets leave one compiled encoder in numba's disk
    cache, not one per alphabet under the same symbol name (loading two such entries into one
    process could crash it); a third process then encodes both alphabets from the cache."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    code = ("import numpy as np, sys; from ncagen.tokens import encode_grids\n"
            "for n in map(int, sys.argv[1:]):\n"
            "    print(int(encode_grids(np.ones((3, 12, 12), np.uint8), n, 2)[2, 35]))")
    outs = [subprocess.run([sys.executable, "-c", code, *ns], env=env, capture_output=True,
                           text=True, check=True).stdout.split() for ns in (["10"], ["15"], ["10", "15"])]
    assert outs == [["1111"], ["3616"], ["1111", "3616"]]
    entries = [p.name for p in tmp_path.rglob("tokens.*.nbc")]
    assert len(entries) == 1, entries
