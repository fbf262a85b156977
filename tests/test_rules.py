"""Rule sampling: the compiled inverse normal CDF gives the weights torch's ndtri gives, and CPU
generation runs without importing torch at all."""

import math
import subprocess
import sys

import numpy as np
import pytest

from ncagen import rng
from ncagen.config import NCAConfig
from ncagen.rules import (_NDTRI_P0, _NDTRI_P1, _NDTRI_Q0, _NDTRI_Q1, TRUNC, TRUNC_STD,
                          _sample, _truncated_normal, sample_rules, uniforms)

LO = 0.5 * math.erfc(TRUNC / math.sqrt(2.0))  # Phi(-2)
EXP_M2 = 0.13533528323661269189


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


def reference_ndtri(y: np.ndarray) -> np.ndarray:
    """Cephes' ndtri on y in [Phi(-2), Phi(2)], written out in numpy in the kernel's operation
    order (numpy's + - * / and sqrt round exactly as compiled code does), the logs by math.log
    (libm's, which numba calls; numpy's own SIMD log may differ in the last bit)."""
    def horner(x, coef):
        r = np.zeros_like(x)
        for c in coef:
            r = r * x + c
        return r

    def log(x):
        return np.array([math.log(v) for v in x.tolist()], np.float64)

    c = y - 0.5
    c2 = c * c
    t = (c + c * (c2 * horner(c2, _NDTRI_P0) / horner(c2, _NDTRI_Q0))) * 2.50662827463100050242
    tail = (y <= EXP_M2) | (y > 1.0 - EXP_M2)
    upper = y[tail] > 1.0 - EXP_M2
    x = np.sqrt(-2.0 * log(np.where(upper, 1.0 - y[tail], y[tail])))
    z = 1.0 / x
    x = (x - log(x) / x) - z * horner(z, _NDTRI_P1) / horner(z, _NDTRI_Q1)
    t[tail] = np.where(upper, x, -x)
    return t


def reference_weights(keys: np.ndarray, cfg: NCAConfig) -> tuple[np.ndarray, list[np.ndarray]]:
    """The unfused sampler's arithmetic: uniform k of a rule's stream (rng.uniform) for flattened
    weight k (w1, w2, w3 in turn), ndtri, times sqrt(1 / fan_in) / TRUNC_STD in float64.
    Returns t (B, total) and the three scaled tensors, flattened, still float64."""
    n, C1, H = cfg.states, cfg.conv_channels, cfg.hidden
    sizes = [(C1 * n * 9, 9 * n), (H * C1, C1), (n * H, H)]
    u = rng.uniform(keys[:, None], np.arange(sum(s for s, _ in sizes))[None, :])
    t = reference_ndtri(LO + u * ((1.0 - LO) - LO))
    bounds = np.cumsum([0] + [s for s, _ in sizes])
    return t, [t[:, a:b] * (math.sqrt(1.0 / fan_in) / TRUNC_STD)
               for a, b, (_, fan_in) in zip(bounds, bounds[1:], sizes)]


@pytest.mark.parametrize("states, conv_channels, hidden",
                         [(2, 4, 16), (10, 4, 16), (20, 4, 16), (10, 8, 32), (3, 3, 5), (20, 1, 1)])
def test_fused_sampler_is_bit_identical_to_the_unfused_arithmetic(states, conv_channels, hidden):
    cfg = NCAConfig(states=states, conv_channels=conv_channels, hidden=hidden)
    edge = [0, 1, 2, 2**31 - 1, 2**62 + 5, 2**63 - 1, -1]
    seeds = np.concatenate([np.arange(3000, dtype=np.int64) * 1_000_003 + 7 * states, edge])
    keys = rng.derive_many(seeds, rng.STREAM_PARAMS)
    t, want = reference_weights(keys, cfg)
    assert (t < -1.99).any() and (t > 1.99).any()  # deep into both tails, where the logs matter
    ndtri = _truncated_normal(uniforms(keys, t.shape[1]))  # the array path, the same arithmetic
    assert np.array_equal(ndtri.view(np.uint64), t.view(np.uint64))

    # the float64 products themselves: a float32 cast would hide most last-bit differences
    got64 = [np.empty_like(w) for w in want]
    scales = [math.sqrt(1.0 / fan_in) / TRUNC_STD for fan_in in (9 * states, conv_channels, hidden)]
    _sample(keys, LO, 1.0 - LO, *(a for pair in zip(got64, scales) for a in pair))
    for g, w in zip(got64, want):
        assert np.array_equal(g.view(np.uint64), w.view(np.uint64))

    got = sample_rules(seeds, cfg)
    for w, name in zip(want, ("w1", "w2", "w3")):
        g = getattr(got, name)
        assert g.dtype == np.float32 and g.flags.c_contiguous
        assert np.array_equal(g.reshape(w.shape).view(np.uint32), w.astype(np.float32).view(np.uint32))
    assert not (got.b1.any() or got.b2.any() or got.b3.any())
    one = sample_rules(seeds[-3:-2], cfg)  # a batch of one gives the same rule
    for k in ("w1", "w2", "w3"):
        assert np.array_equal(getattr(one, k).view(np.uint32), getattr(got, k)[-3:-2].view(np.uint32))
    empty = sample_rules(np.array([], np.int64), cfg)
    assert empty.batch == 0 and empty.w1.shape == (0, conv_channels, states, 3, 3)
    assert empty.w2.shape == (0, hidden, conv_channels) and empty.w3.shape == (0, states, hidden)


def test_ndtri_is_bit_identical_at_the_ends_and_the_branch_boundaries():
    """The uniforms nearest 0 and 1, and those the stream can draw on either side of the two
    tail boundaries (u = (k + 0.5) 2**-53), plus the floats next to each boundary."""
    hi = 1.0 - LO
    u = [0.5 * 2.0**-53, (2.0**53 - 0.5) * 2.0**-53, 0.5]
    for y in (EXP_M2, 1.0 - EXP_M2):
        u0 = (y - LO) / (hi - LO)
        k0 = math.floor(u0 * 2.0**53)
        u += [(k0 + d + 0.5) * 2.0**-53 for d in range(-40, 41)]
        u += [np.nextafter(u0, -1.0), u0, np.nextafter(u0, 2.0)]
    u = np.array(u)
    y = LO + u * (hi - LO)
    for edge in (EXP_M2, 1.0 - EXP_M2):  # both branches on each side of both boundaries
        near = y[np.abs(y - edge) < 1e-13]
        assert (near <= edge).any() and (near > edge).any()
    assert np.array_equal(_truncated_normal(u).view(np.uint64), reference_ndtri(y).view(np.uint64))
