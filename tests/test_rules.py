"""Rule sampling: the compiled inverse normal CDF gives the weights torch's ndtri gives, and CPU
generation runs without importing torch at all."""

import math
import subprocess
import sys

import numpy as np

from ncagen import rng
from ncagen.config import NCAConfig
from ncagen.rules import TRUNC, TRUNC_STD, _truncated_normal, sample_rules, uniforms


def test_truncated_normal_matches_scipy_and_stays_in_range():
    from scipy.special import ndtri

    u = np.random.default_rng(0).random((300, 500))
    t = _truncated_normal(u)
    lo = 0.5 * math.erfc(TRUNC / math.sqrt(2.0))
    want = ndtri(lo + u * (1.0 - 2.0 * lo))
    assert np.allclose(t, want, rtol=4e-16, atol=4e-16)
    assert t.min() >= -TRUNC and t.max() <= TRUNC
    assert (t < -1.8).any() and (t > 1.8).any()  # both tails are exercised


def test_weights_equal_those_sampled_with_torch_ndtri():
    import torch

    cfg = NCAConfig(states=10)
    seeds = np.arange(3000, dtype=np.int64) * 7919 + 11
    params = sample_rules(seeds, cfg)
    keys = rng.derive_many(seeds, rng.STREAM_PARAMS)
    u = uniforms(keys, params.num_params() - cfg.conv_channels - cfg.hidden - cfg.states)
    lo = 0.5 * math.erfc(TRUNC / math.sqrt(2.0))
    t = torch.special.ndtri(torch.from_numpy(lo + u * (1.0 - 2.0 * lo))).numpy()
    n, C1, H = cfg.states, cfg.conv_channels, cfg.hidden
    w1 = (t[:, :9 * n * C1] * (math.sqrt(1 / (9 * n)) / TRUNC_STD)).astype(np.float32)
    w3 = (t[:, -n * H:] * (math.sqrt(1 / H) / TRUNC_STD)).astype(np.float32)
    assert np.array_equal(params.w1.reshape(len(seeds), -1), w1)
    assert np.array_equal(params.w3.reshape(len(seeds), -1), w3)


def test_cpu_generation_does_not_import_torch():
    code = ("import sys\n"
            "from ncagen.config import Band, NCAConfig\n"
            "from ncagen.generate import generate\n"
            "rows = sum(len(c['rule_seed']) for c in generate(NCAConfig(), Band(0.5, 1.0), 3, 20))\n"
            "assert rows == 20, rows\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)
