"""The two rollout engines: numba (CPU) and torch agree bit for bit, match the spec's network,
and a row does not depend on the batch, the thread count or the batch size it was made in; so
with the opt-in compiled torch step and the opt-in Triton step."""

import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ncagen import rng
from ncagen.config import Band, NCAConfig
from ncagen.generate import candidate_seeds, generate, regenerate
from ncagen.rollout import _advance_torch, advance, init_state, noise_keys, reference_logits
from ncagen.rules import sample_rules, uniforms

# n = 17 takes the CPU engine's path without row-triple tables
CASES = [(2, 0.0), (10, 0.0), (10, 0.7), (15, 0.0), (17, 0.3)]


def _batch(cfg: NCAConfig, count: int, key: int = 5):
    seeds, sims = candidate_seeds(key, 0, count, cfg.sims_per_rule)
    return sample_rules(seeds, cfg), init_state(seeds, sims, cfg), noise_keys(seeds, sims)


def _both_engines(cfg: NCAConfig, count: int, K: int = 6, key: int = 5):
    params, state, keys = _batch(cfg, count, key)
    t1 = cfg.record_time(K - 1)
    out_nb = np.zeros((count, K, cfg.grid, cfg.grid), np.uint8)
    out_pt = np.zeros_like(out_nb)
    end_nb = advance(params, state, keys, 0, t1, cfg, out_nb, device="cpu")
    end_pt = _advance_torch(params, state, keys, 0, t1, cfg, out_pt, 0, "cpu")
    return out_nb, end_nb, out_pt, end_pt


@pytest.mark.parametrize("n,bias", CASES)
def test_numba_and_torch_engines_agree_bit_for_bit(n, bias):
    cfg = NCAConfig(states=n, identity_bias=bias)
    out_nb, end_nb, out_pt, end_pt = _both_engines(cfg, 40)
    assert np.array_equal(out_nb, out_pt)
    assert np.array_equal(end_nb, end_pt)
    assert len(np.unique(out_nb)) == n  # every state occurs: the grids are not degenerate


@pytest.mark.parametrize("n,conv_channels,hidden", [(10, 8, 32), (10, 1, 1), (17, 3, 5)])
def test_engines_agree_at_other_network_widths(n, conv_channels, hidden):
    cfg = NCAConfig(states=n, conv_channels=conv_channels, hidden=hidden)
    out_nb, end_nb, out_pt, end_pt = _both_engines(cfg, 20)
    assert np.array_equal(out_nb, out_pt) and np.array_equal(end_nb, end_pt)


def test_engines_agree_on_another_grid_and_schedule():
    cfg = NCAConfig(states=6, grid=8, burn_in=3, dt=2, seq_len=200)
    out_nb, end_nb, out_pt, end_pt = _both_engines(cfg, 30)
    assert np.array_equal(out_nb, out_pt) and np.array_equal(end_nb, end_pt)


def test_engines_agree_when_the_cells_do_not_fill_whole_vector_lanes():
    # 9 x 9 = 81 cells: the CPU kernel pads to 88, and the padding must not count as moved or tied
    cfg = NCAConfig(states=4, grid=9, patch=3, seq_len=400)
    out_nb, end_nb, out_pt, end_pt = _both_engines(cfg, 40, K=8)
    assert np.array_equal(out_nb, out_pt) and np.array_equal(end_nb, end_pt)
    frozen = (out_nb[:, -1] == out_nb[:, -2]).all(axis=(1, 2))
    assert 0 < frozen.sum() < 40  # the freeze shortcut is taken by some rows, not all


@pytest.mark.parametrize("temperature", [0.02, 0.3, 2.0])
def test_engines_agree_where_near_ties_are_the_rule(temperature):
    """At a high temperature nearly every cell is a near tie, and the CPU kernel mostly decides
    them by its bound (a state whose Gumbel term, bounded by the edge of its uniform's bucket,
    cannot beat the argmax's lowest noisy logit needs no logarithm): the draws must still be
    those of the torch engine's plain Gumbel-max over every state."""
    cfg = NCAConfig(temperature=temperature)
    out_nb, end_nb, out_pt, end_pt = _both_engines(cfg, 40, K=10)
    assert np.array_equal(out_nb, out_pt) and np.array_equal(end_nb, end_pt)
    plain = np.zeros_like(out_nb)  # the same rules at the default temperature
    advance(*_batch(NCAConfig(), 40), 0, cfg.record_time(9), NCAConfig(), plain)
    assert not np.array_equal(out_nb, plain)  # the noise did decide cells


def test_gumbel_bound_holds_across_each_bucket():
    """The bound's premise: the compiled log(-log(u)) at any u of a bucket lies within EDGE_EPS
    of the range between its values at the bucket's edges (checked at random uniforms, at the
    edges themselves and at their neighbouring doubles)."""
    import math

    import numba

    from ncagen.kernel import EDGE_BUCKETS as NB, EDGE_EPS

    gumbel = numba.njit(lambda u: math.log(-math.log(u)))
    edge = np.array([gumbel(q / NB) if 0 < q < NB else np.nan for q in range(NB + 1)])
    rng = np.random.default_rng(0)
    us = np.concatenate([rng.random(200_000), np.arange(1, NB) / NB])
    us = np.concatenate([us, np.nextafter(us, 0.0), np.nextafter(us, 1.0)])
    for u in us:
        q = int(u * NB)
        if 0 < q < NB - 1:
            g = gumbel(u)
            assert edge[q + 1] - EDGE_EPS <= g <= edge[q] + EDGE_EPS, (u, g)


def test_kernel_source_is_cached_under_ncagen_cache_dir(kernel_cache):
    import os
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "from ncagen.config import NCAConfig\n"
            "from ncagen.generate import candidate_seeds, regenerate\n"
            "cfg = NCAConfig(states=3, grid=6, seq_len=200)\n"
            "s, m = candidate_seeds(1, 0, 5, 1)\n"
            "print(regenerate(cfg, s, m)['input_ids'].sum())\n")
    env = {**os.environ, "NCAGEN_CACHE_DIR": str(kernel_cache)}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           check=True, timeout=600).stdout for _ in range(2)]
    assert runs[0] == runs[1]
    sources = list((kernel_cache / "kernels").glob("nca_n3_c4_h16_g6_*.py"))
    assert len(sources) == 1
    assert any(p.suffix in (".nbi", ".nbc") for p in (kernel_cache / "kernels").rglob("*"))


def test_engines_agree_with_nonzero_biases():
    # the spec's rules have zero biases and the CPU kernel then skips adding them; a rule with
    # biases takes the kernel that adds them, in the torch engine's order
    cfg = NCAConfig(states=5)
    params, state, keys = _batch(cfg, 24, key=8)
    r = np.random.default_rng(1)
    params = dataclasses.replace(params, **{
        k: r.normal(0, 0.3, getattr(params, k).shape).astype(np.float32) for k in ("b1", "b2", "b3")})
    K, t1 = 6, cfg.record_time(5)
    out_nb, out_pt = (np.zeros((24, K, 12, 12), np.uint8) for _ in range(2))
    end_nb = advance(params, state, keys, 0, t1, cfg, out_nb)
    end_pt = _advance_torch(params, state, keys, 0, t1, cfg, out_pt, 0, "cpu")
    assert np.array_equal(out_nb, out_pt) and np.array_equal(end_nb, end_pt)
    plain, _, _ = _batch(cfg, 24, key=8)
    out_plain = np.zeros_like(out_nb)
    advance(plain, state, keys, 0, t1, cfg, out_plain)
    assert not np.array_equal(out_plain, out_nb)  # the biases did change the trajectories


def test_engines_agree_when_near_ties_are_everywhere():
    # at tau = 0.02 the near-tie window is 1.2 logits wide, so most cells take the Gumbel draw
    cfg = NCAConfig(states=10, temperature=0.02)
    out_nb, end_nb, out_pt, end_pt = _both_engines(cfg, 24)
    assert np.array_equal(out_nb, out_pt) and np.array_equal(end_nb, end_pt)
    moved = (out_nb[:, 1:] != out_nb[:, :-1]).mean()
    assert moved > 0.3  # the noise keeps the grids churning


def test_engines_agree_on_frozen_grids_and_continuations():
    # many n = 2 rules freeze; the CPU engine stops computing them, the torch engine does not
    cfg = NCAConfig(states=2)
    params, state, keys = _batch(cfg, 64, key=11)
    K, R = 20, 8
    full = np.zeros((64, K, 12, 12), np.uint8)
    advance(params, state, keys, 0, cfg.record_time(K - 1), cfg, full)
    frozen = (full[:, -1] == full[:, -2]).all(axis=(1, 2))
    assert frozen.sum() >= 5
    head = np.zeros((64, R, 12, 12), np.uint8)
    mid = advance(params, state, keys, 0, cfg.record_time(R - 1), cfg, head)
    tail = np.zeros((64, K - R, 12, 12), np.uint8)
    end_nb = advance(params, mid, keys, cfg.record_time(R - 1), cfg.record_time(K - 1), cfg, tail,
                     rec_offset=R)
    tail_pt = np.zeros_like(tail)
    end_pt = _advance_torch(params, mid, keys, cfg.record_time(R - 1), cfg.record_time(K - 1), cfg,
                            tail_pt, R, "cpu")
    assert np.array_equal(np.concatenate([head, tail], 1), full)
    assert np.array_equal(tail, tail_pt) and np.array_equal(end_nb, end_pt)


@pytest.mark.parametrize("n,bias", CASES)
def test_one_step_is_the_argmax_of_the_reference_network(n, bias):
    cfg = NCAConfig(states=n, identity_bias=bias, burn_in=5)
    params, _, keys = _batch(cfg, 12, key=3)
    state = (rng.uniform(np.uint64(9), np.arange(12 * 144)) * n).astype(np.uint8)
    state = state.reshape(12, 12, 12)
    nxt = advance(params, state, keys, 0, 1, cfg, np.zeros((12, 1, 12, 12), np.uint8))
    logits = reference_logits(params, state, cfg)  # (B, n, G, G) float64
    logits += bias * (np.arange(n)[None, :, None, None] == state[:, None])
    top2 = np.sort(logits, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-2  # away from near-ties (the window is 6e-3)
    assert clear.mean() > 0.5
    assert np.array_equal(nxt[clear], logits.argmax(axis=1)[clear])


def test_rows_do_not_depend_on_batch_threads_or_company():
    cfg = NCAConfig(states=10, identity_bias=0.2)
    seeds, sims = candidate_seeds(21, 0, 30, 1)
    whole = regenerate(cfg, seeds, sims)
    for i in (0, 13, 29):
        alone = regenerate(cfg, seeds[i:i + 1], sims[i:i + 1])
        for k in whole:
            assert np.array_equal(alone[k][0], whole[k][i]), k
    params, state, keys = _batch(cfg, 30, key=21)
    outs = []
    for threads in (1, 2, 3):
        out = np.zeros((30, 4, 12, 12), np.uint8)
        advance(params, state, keys, 0, cfg.record_time(3), cfg, out, threads=threads)
        outs.append(out)
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


@pytest.mark.parametrize("batch", [1, 33])
def test_generated_rows_equal_rows_regenerated_alone(batch):
    cfg = dataclasses.replace(NCAConfig(), seq_len=380)
    parts = list(generate(cfg, Band(0.5, 1.0), 99, 12, batch=batch))
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    for i in range(12):
        alone = regenerate(cfg, cols["rule_seed"][i:i + 1], cols["sim"][i:i + 1])
        for k in cols:
            assert np.array_equal(alone[k][0], cols[k][i]), k


def test_compiled_uniforms_are_the_rng_uniforms():
    keys = rng.derive_many(np.arange(50, dtype=np.int64), rng.STREAM_INIT, np.zeros(50, np.int64))
    expected = rng.uniform(keys[:, None], np.arange(300)[None, :])
    assert np.array_equal(uniforms(keys, 300), expected)


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                    reason="torch.compile's CPU backend needs a C++ compiler")
def test_compiled_torch_engine_agrees_bit_for_bit_and_repeats():
    # the opt-in fused step (rollout.compiled_network): near ties and an identity bias, two
    # batch sizes through one dynamic-shape compile, and a second run of the same batch
    cfg = NCAConfig(states=10, identity_bias=0.3, temperature=0.02)
    for count in (24, 40):
        params, state, keys = _batch(cfg, count, key=count)
        K, t1 = 6, cfg.record_time(5)
        out_nb, out_a, out_b = (np.zeros((count, K, 12, 12), np.uint8) for _ in range(3))
        end_nb = advance(params, state, keys, 0, t1, cfg, out_nb)
        end_a = _advance_torch(params, state, keys, 0, t1, cfg, out_a, 0, "cpu", engine="compiled")
        end_b = _advance_torch(params, state, keys, 0, t1, cfg, out_b, 0, "cpu", engine="compiled")
        assert np.array_equal(out_nb, out_a) and np.array_equal(end_nb, end_a)
        assert np.array_equal(out_a, out_b) and np.array_equal(end_a, end_b)


_FUSED_CHECK = r"""
import numpy as np, torch
from ncagen.config import NCAConfig
from ncagen.generate import candidate_seeds
from ncagen.gpu_kernel import fused_step
from ncagen.rollout import (_advance_torch, _neighbour_index, _network_torch, advance,
                            init_state, near_tie_gap, noise_keys)
from ncagen.rules import sample_rules
for cfg in (NCAConfig(temperature=0.02), NCAConfig(states=15, identity_bias=0.3),
            NCAConfig(states=5, identity_bias=-0.2, temperature=0.01)):
    seeds, sims = candidate_seeds(3, 0, 3, 1)
    params, state, keys = sample_rules(seeds, cfg), init_state(seeds, sims, cfg), noise_keys(seeds, sims)
    t1 = cfg.record_time(2)
    out_nb, out_fu = (np.zeros((3, 3, 12, 12), np.uint8) for _ in range(2))
    end_nb = advance(params, state, keys, 0, t1, cfg, out_nb)
    end_fu = _advance_torch(params, state, keys, 0, t1, cfg, out_fu, 0, "torch-cpu", engine="fused")
    assert np.array_equal(out_nb, out_fu) and np.array_equal(end_nb, end_fu), "grids"
    w = [torch.from_numpy(np.ascontiguousarray(a)) for a in (params.offset_table(), params.b1,
         params.w2, params.b2, params.w3, params.b3)]
    cur, nbr = torch.from_numpy(out_nb[:, -1]).long().reshape(3, -1), _neighbour_index(12)
    thr = float(near_tie_gap(cfg.temperature))
    lg, nxt, near = fused_step(w, nbr, cfg.states, 12, cfg.identity_bias, thr)(cur)
    eager = _network_torch(*w, cur, nbr, float(cfg.identity_bias))
    top2 = eager.topk(2, dim=-1).values
    assert torch.equal(lg.view(torch.int32), eager.view(torch.int32)), "logits, bit for bit"
    assert torch.equal(nxt, eager.argmax(dim=-1)), "argmax"
    assert torch.equal(near, (top2[..., 0] - top2[..., 1]) < thr), "near ties"
    assert near.any(), "the check should see near ties"
print("fused ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_fused_triton_step_agrees_bit_for_bit_in_the_interpreter(tmp_path):
    # the opt-in Triton kernel (ncagen.gpu_kernel) run by Triton's interpreter on the CPU, in a
    # process of its own (TRITON_INTERPRET is read when a kernel is defined): its grids are the
    # CPU engine's, its logits, argmax and near ties the eager torch step's, at a temperature
    # with many near ties and with an identity bias; on a GPU tests/test_gpu.py checks the same
    env = {**os.environ, "TRITON_INTERPRET": "1", "NCAGEN_CACHE_DIR": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", _FUSED_CHECK], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0 and "fused ok" in res.stdout, res.stderr[-3000:]
