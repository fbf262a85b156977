"""The device pipeline of `generate`: rollouts on a device thread, ratios and assembly on a unit
thread. Run with the torch engine on the CPU standing in for the GPU (rollout.TORCH_CPU), its
rows are the CPU engine's, byte for byte, and the two stages do overlap; so with the CPU kernel
on one thread as the device (rollout.CPU_DEVICE)."""

import threading
import time

import numpy as np
import pytest

pytest.importorskip("torch")

from ncagen import generate as gen  # noqa: E402
from ncagen.config import Band, NCAConfig  # noqa: E402
from ncagen.generate import ShardStats, generate, generate_parts  # noqa: E402
from ncagen.rollout import CPU_DEVICE, TORCH_CPU, resolve_device  # noqa: E402


def _rows(batches) -> dict:
    batches = list(batches)
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


@pytest.mark.parametrize("cfg,band,rows,batch", [
    (NCAConfig(), Band(0.3, 0.4), 20, 64),
    (NCAConfig(states=15, identity_bias=0.05), Band(0.5, 1.0), 24, 16),
    (NCAConfig(states=10, temperature=0.02, seq_len=500), Band(0.4, 1.0), 12, 8),
])
def test_pipelined_torch_rows_equal_cpu_rows(cfg, band, rows, batch):
    cpu_stats, dev_stats = ShardStats(), ShardStats()
    cpu = _rows(generate(cfg, band, 7, rows, device="cpu", batch=batch, stats=cpu_stats))
    dev = _rows(generate(cfg, band, 7, rows, device=TORCH_CPU, batch=batch, stats=dev_stats))
    assert cpu.keys() == dev.keys()
    for k in cpu:
        assert cpu[k].dtype == dev[k].dtype and np.array_equal(cpu[k], dev[k]), k
    assert len(cpu["rule_seed"]) == rows
    assert cpu_stats.accepted >= rows and dev_stats.accepted >= rows


@pytest.mark.parametrize("device", [TORCH_CPU, CPU_DEVICE])
def test_pipelined_mixture_equals_cpu_mixture(device):
    cfg = NCAConfig()
    parts = [(Band(0.3, 0.4), 3, 6), (Band(0.5, 1.0), 4, 10)]
    cpu = _rows(generate_parts(cfg, parts, device="cpu", batch=16))
    dev = _rows(generate_parts(cfg, parts, device=device, batch=16))
    for k in cpu:
        assert np.array_equal(cpu[k], dev[k]), k


def test_a_shard_stopped_early_leaves_the_pipeline_usable():
    cfg = NCAConfig(seq_len=500)
    batches = generate(cfg, Band(0.0, 1.0), 5, 200, device=TORCH_CPU, batch=8)
    first = next(batches)
    batches.close()  # queued units are dropped; the pools must still serve the next shard
    again = next(generate(cfg, Band(0.0, 1.0), 5, 200, device=TORCH_CPU, batch=8))
    for k in first:
        assert np.array_equal(first[k], again[k]), k


@pytest.mark.parametrize("device", [TORCH_CPU, CPU_DEVICE])
def test_device_rollouts_overlap_the_ratios(monkeypatch, device):
    spans: list[tuple[str, str, float, float]] = []  # (stage, thread, start, end)

    def timed(stage, fn, pause=0.0):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            time.sleep(pause)  # long enough that the other stage's work must fall inside it
            out = fn(*args, **kwargs)
            spans.append((stage, threading.current_thread().name, t0, time.perf_counter()))
            return out
        return wrapper

    monkeypatch.setattr(gen, "rollout_tokens", timed("rollout", gen.rollout_tokens))
    monkeypatch.setattr(gen.complexity, "gzip_ratios",
                        timed("gzip", gen.complexity.gzip_ratios, pause=0.2))
    cfg = NCAConfig(seq_len=500)
    _rows(generate(cfg, Band(0.0, 1.0), 9, 64, device=device, batch=8))  # 8 units
    rollouts = [s for s in spans if s[0] == "rollout"]
    ratios = [s for s in spans if s[0] == "gzip"]
    assert rollouts and all(s[1].startswith("ncagen-device") for s in rollouts)
    assert ratios and all(s[1].startswith("ncagen-unit") for s in ratios)
    overlap = lambda a, b: a[2] < b[3] and b[2] < a[3]  # noqa: E731
    assert any(overlap(r, g) for r in rollouts for g in ratios), spans


@pytest.mark.parametrize("device", [TORCH_CPU, CPU_DEVICE])
def test_the_stand_in_devices_are_not_build_devices(device):
    with pytest.raises(ValueError):
        resolve_device(device)


@pytest.mark.parametrize("sims_per_rule", [1, 3])
def test_fresh_candidates_do_not_depend_on_the_split(sims_per_rule):
    # a device's unit samples its rules and initial grids on several threads
    cfg = NCAConfig(sims_per_rule=sims_per_rule)
    seeds, sims = gen.candidate_seeds(4, 0, 3 * gen.PREP_CHUNK + 50, sims_per_rule)
    one_params, one_state = gen.fresh_candidates(cfg, seeds, sims, threads=1)
    many_params, many_state = gen.fresh_candidates(cfg, seeds, sims, threads=3)
    assert np.array_equal(one_state, many_state)
    for k in ("w1", "b1", "w2", "b2", "w3", "b3"):
        assert np.array_equal(getattr(one_params, k), getattr(many_params, k)), k


def test_a_small_shard_rolls_out_only_what_it_needs(monkeypatch):
    """A device starts with no more units than the shard's rows could fill: a 100-row shard of a
    band nearly every candidate reaches is one unit (one head rollout, one tail), not the three a
    full pipeline holds, which would run unseen and hold up the next shard."""
    from ncagen.threads import pool

    calls = []
    real = gen.rollout_tokens

    def counted(*args, **kwargs):
        calls.append("tail" if kwargs.get("start") is not None else "head")
        return real(*args, **kwargs)

    monkeypatch.setattr(gen, "rollout_tokens", counted)
    rows = _rows(generate(NCAConfig(seq_len=500), Band(0.0, 1.0), 3, 100, device=CPU_DEVICE))
    for name in ("ncagen-device", "ncagen-unit"):  # let anything left behind finish
        pool(1, name).submit(lambda: None).result()
    assert len(rows["rule_seed"]) == 100 and calls == ["head", "tail"]
