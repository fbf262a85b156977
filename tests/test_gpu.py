"""The CUDA path: skipped where no GPU is visible; where one is, rows equal the CPU engine's,
through the device pipeline of `generate` too."""

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
