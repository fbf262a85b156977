"""The CUDA path: skipped where no GPU is visible; where one is, rows equal the CPU engine's,
through the device pipeline of `generate` too, and with the opt-in Triton step."""

import importlib.util

import numpy as np
import pytest
import torch

from ncagen.config import Band, NCAConfig
from ncagen.generate import ShardStats, generate, regenerate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")


def test_cuda_rows_equal_cpu_rows():
    cfg = NCAConfig()
    cpu = list(generate(cfg, Band(0.3, 0.4), 11, 64, device="cpu", stats=ShardStats()))
    gpu = list(generate(cfg, Band(0.3, 0.4), 11, 64, device="cuda", stats=ShardStats()))
    for k in ("input_ids", "gzip_ratio", "rule_seed"):
        assert np.array_equal(np.concatenate([c[k] for c in cpu]), np.concatenate([g[k] for g in gpu]))


def test_cuda_regenerate_matches_cpu():
    cfg = NCAConfig(states=15, identity_bias=0.5)
    seeds, sims = np.arange(50) * 7919, np.zeros(50, np.int32)
    a = regenerate(cfg, seeds, sims, device="cpu")
    b = regenerate(cfg, seeds, sims, device="cuda")
    assert np.array_equal(a["input_ids"], b["input_ids"])


@pytest.mark.parametrize("cfg,band,rows,batch", [
    (NCAConfig(temperature=0.02), Band(0.4, 1.0), 300, 128),  # near ties everywhere
    (NCAConfig(states=15, identity_bias=0.05), Band(0.5, 1.0), 300, 128),
    (NCAConfig(states=17, identity_bias=0.3), Band(0.0, 1.0), 300, 64),  # no row-triple tables
])
def test_pipelined_cuda_rows_equal_cpu_rows(cfg, band, rows, batch):
    # several units in flight on the device pipeline, each a batch of its own size
    cpu = list(generate(cfg, band, 5, rows, device="cpu", batch=batch))
    gpu = list(generate(cfg, band, 5, rows, device="cuda", batch=batch))
    for k in cpu[0]:
        assert np.array_equal(np.concatenate([c[k] for c in cpu]), np.concatenate([g[k] for g in gpu])), k


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
@pytest.mark.parametrize("cfg", [NCAConfig(temperature=0.02), NCAConfig(states=15, identity_bias=0.3),
                                 NCAConfig()])
def test_fused_cuda_step_equals_cpu_engine(cfg):
    # the opt-in Triton step (ncagen.gpu_kernel) on the GPU: grids of 2,048 candidates over a
    # head's steps are the CPU engine's, and its logits of the last grids the eager step's
    from ncagen.generate import candidate_seeds
    from ncagen.gpu_kernel import fused_step
    from ncagen.rollout import (_advance_torch, _neighbour_index, _network_torch,
                                advance, init_state, near_tie_gap, noise_keys)
    from ncagen.rules import sample_rules

    B, K = 2048, cfg.ratio_grids
    seeds, sims = candidate_seeds(9, 0, B, 1)
    params, state, keys = sample_rules(seeds, cfg), init_state(seeds, sims, cfg), noise_keys(seeds, sims)
    t1 = cfg.record_time(K - 1)
    out_nb, out_fu = (np.zeros((B, K, cfg.grid, cfg.grid), np.uint8) for _ in range(2))
    end_nb = advance(params, state, keys, 0, t1, cfg, out_nb)
    end_fu = _advance_torch(params, state, keys, 0, t1, cfg, out_fu, 0, "cuda", engine="fused")
    assert np.array_equal(out_nb, out_fu) and np.array_equal(end_nb, end_fu)
    w = [torch.from_numpy(np.ascontiguousarray(a)).cuda() for a in (
        params.offset_table(), params.b1, params.w2, params.b2, params.w3, params.b3)]
    cur = torch.from_numpy(out_nb[:, -1]).cuda().long().reshape(B, -1)
    nbr = _neighbour_index(cfg.grid).cuda()
    thr = float(near_tie_gap(cfg.temperature))
    lg = fused_step(w, nbr, cfg.states, cfg.grid, cfg.identity_bias, thr)(cur)[0]
    eager = _network_torch(*w, cur, nbr, float(cfg.identity_bias))
    assert torch.equal(lg.view(torch.int32), eager.view(torch.int32))  # bit for bit, signed zeros too
