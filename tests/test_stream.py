"""The on-the-fly stream yields the rows of a build with the same seed, each exactly once over
ranks and DataLoader workers."""

import glob
import itertools
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ncagen.plan import BuildConfig, plan
from ncagen.config import Band, ConfigError, NCAConfig
from ncagen.stream import (NCAStream, even_quotas, nca_iterable_dataset, read_build, shard_tasks,
                           stream_loader)

CONFIG = "band_50_100"
ROWS, SHARD_ROWS, VAL_ROWS, SEQ_LEN = 120, 15, 30, 380


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A build through the real CLI: 8 train shards of 15 rows, 2 validation shards."""
    out = tmp_path_factory.mktemp("stream") / "nca"
    subprocess.run([sys.executable, "-m", "ncagen.build", "--band", "0.5-1.0", "--rows", str(ROWS),
                    "--shard-rows", str(SHARD_ROWS), "--val-rows", str(VAL_ROWS),
                    "--seq-len", str(SEQ_LEN), "--batch", "64", "--executor", "local",
                    "--out", str(out)], check=True, capture_output=True)
    return out


def build_rows(out, split: str) -> dict:
    """A split's rows as written, shard files in order."""
    files = sorted(glob.glob(str(out / "data" / CONFIG / f"{split}-*.parquet")))
    return pq.read_table(files, columns=["rule_seed", "input_ids"]).to_pydict()


def as_rows(seeds, ids) -> list[tuple]:
    return [(int(s), tuple(int(t) for t in x)) for s, x in zip(seeds, ids)]


@pytest.mark.parametrize("split", ["train", "validation"])
def test_stream_is_the_build_in_order(built, split):
    want = build_rows(built, split)
    got = list(NCAStream.from_build(str(built), CONFIG, split=split))
    assert [r["rule_seed"] for r in got] == want["rule_seed"]
    assert as_rows([r["rule_seed"] for r in got], [r["input_ids"] for r in got]) == \
        as_rows(want["rule_seed"], want["input_ids"])
    assert all(r["input_ids"].dtype == np.int32 and r["band"] == CONFIG for r in got)


def test_two_ranks_two_workers_yield_each_row_once(built):
    want = build_rows(built, "train")
    loaders = [stream_loader(NCAStream.from_build(str(built), CONFIG, rank=r, world_size=2),
                             batch_size=4, num_workers=2) for r in (0, 1)]
    iters = [iter(dl) for dl in loaders]  # all four workers start together
    per_rank = [[b for b in it] for it in iters]
    got = {r: [] for r in (0, 1)}
    for r, batches in enumerate(per_rank):
        for b in batches:
            got[r] += as_rows(b["rule_seed"].tolist(), b["input_ids"].tolist())
    every = got[0] + got[1]
    assert len(every) == ROWS and len(set(every)) == ROWS
    assert sorted(every) == sorted(as_rows(want["rule_seed"], want["input_ids"]))
    # shards are dealt round-robin: rank r's workers hold shards i with i % 4 in {2r, 2r+1}
    shard_of = {s: i // SHARD_ROWS for i, s in enumerate(want["rule_seed"])}
    for r in (0, 1):
        assert {shard_of[s] % 4 for s, _ in got[r]} == {2 * r, 2 * r + 1}


def test_endless_stream_extends_the_build(built):
    want = build_rows(built, "train")["rule_seed"]
    stream = NCAStream.from_build(str(built), CONFIG, rows=None, rank=0, world_size=1)
    head = [r["rule_seed"] for r in itertools.islice(stream, ROWS + 5)]
    assert head[:ROWS] == want and len(set(head)) == ROWS + 5
    later = NCAStream.from_build(str(built), CONFIG, rows=None, start_shard=ROWS // SHARD_ROWS,
                                 rank=0, world_size=1)
    assert [r["rule_seed"] for r in itertools.islice(later, 5)] == head[ROWS:]


def test_datasets_generator_splits_by_node(built):
    from datasets.distributed import split_dataset_by_node

    spec = read_build(str(built), CONFIG)
    ds = nca_iterable_dataset(spec["cfg"], spec["band"], spec["seed"], rows=ROWS, shard_rows=SHARD_ROWS)
    assert ds.n_shards == ROWS // SHARD_ROWS
    parts = [[r["rule_seed"] for r in split_dataset_by_node(ds, rank, 2)] for rank in (0, 1)]
    assert sorted(parts[0] + parts[1]) == sorted(build_rows(built, "train")["rule_seed"])
    assert not set(parts[0]) & set(parts[1])


def test_shard_keys_are_the_build_plan():
    nca = NCAConfig(seq_len=380)
    cfg = BuildConfig(out="unused", bands=(Band(0.3, 0.4), Band(0.5, 1.0)), states=(10, 15),
                      rows=50, val_rows=25, shard_rows=20, seed=7, nca=nca)
    planned = plan(cfg)
    for n in cfg.states:
        for band in cfg.bands:
            for split, rows in (("train", 50), ("validation", 25)):
                mine = list(shard_tasks(NCAConfig(seq_len=380, states=n), band, 7, 20, rows, split))
                theirs = [t for t in planned if t.nca.states == n and t.band == band and t.split == split]
                assert mine == theirs


def test_rank_defaults_and_errors(monkeypatch):
    cfg = NCAConfig(seq_len=380)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    s = NCAStream(cfg, "0.5-1.0")
    assert (s.rank, s.world_size, s.band, s.rows) == (1, 3, Band(0.5, 1.0), None)
    for kwargs in ({"rank": 0}, {"rank": 2, "world_size": 2}, {"split": "test"}, {"rows": 0},
                   {"shard_rows": 0}, {"start_shard": -1}):
        with pytest.raises(ConfigError):
            NCAStream(cfg, "0.5-1.0", **kwargs)
    with pytest.raises(ConfigError):
        NCAStream(cfg, "1.0-0.5")


def test_forked_workers_after_the_parent_generated():
    """A fork copies the parent's thread pools without their threads; workers must not hang."""
    import torch

    cfg = NCAConfig(seq_len=380)
    want = [r["rule_seed"] for r in NCAStream(cfg, "0.5-1.0", rows=8, shard_rows=2)]  # pools start
    loader = torch.utils.data.DataLoader(NCAStream(cfg, "0.5-1.0", rows=8, shard_rows=2),
                                         batch_size=None, num_workers=2, multiprocessing_context="fork",
                                         timeout=60)
    assert sorted(r["rule_seed"] for r in loader) == sorted(want)


def dealt(want: dict, shards: list[int], rows: int) -> list[tuple]:
    """The first `rows` rows of the given build shards, in that order."""
    seeds = [s for i in shards for s in want["rule_seed"][i * SHARD_ROWS:(i + 1) * SHARD_ROWS]]
    ids = [x for i in shards for x in want["input_ids"][i * SHARD_ROWS:(i + 1) * SHARD_ROWS]]
    return as_rows(seeds[:rows], ids[:rows])


@pytest.mark.parametrize("world_size, per_rank", [(2, 45), (3, 30)])
def test_bounded_stream_gives_every_rank_the_same_rows(built, world_size, per_rank):
    """7 full shards over 2 ranks (4 + 3) or 3 ranks (3 + 2 + 2): each rank stops at the fewest."""
    rows = 7 * SHARD_ROWS
    want = build_rows(built, "train")
    got = [[(r["rule_seed"], tuple(int(t) for t in r["input_ids"]))
            for r in NCAStream.from_build(str(built), CONFIG, rows=rows, rank=rank,
                                          world_size=world_size)]
           for rank in range(world_size)]
    assert [len(g) for g in got] == [per_rank] * world_size
    every = [row for g in got for row in g]
    assert len(set(every)) == len(every)  # no row twice
    for rank, g in enumerate(got):  # each rank's own shards, its tail beyond the fewest dropped
        assert g == dealt(want, list(range(rank, 7, world_size)), per_rank)

    uneven = [sum(1 for _ in NCAStream.from_build(str(built), CONFIG, rows=rows, rank=rank,
                                                 world_size=world_size, even_ranks=False))
              for rank in range(world_size)]
    assert sum(uneven) == rows and len(set(uneven)) > 1  # what even_ranks evens out


def test_bounded_stream_gives_equal_batches_over_ranks_and_workers(built):
    """2 ranks x 2 workers over 7 shards: consumers hold 2, 2, 2, 1 shards; the worker positions
    yield 30 and 15 rows on both ranks, so both ranks see the same batches."""
    want = build_rows(built, "train")
    stream = NCAStream.from_build(str(built), CONFIG, rows=7 * SHARD_ROWS, rank=0, world_size=2)
    assert stream.quotas(2) == [30, 15] and even_quotas([15] * 7, 2, 2) == [30, 15]
    batches = {}
    for rank in (0, 1):
        loader = torch.utils.data.DataLoader(
            NCAStream.from_build(str(built), CONFIG, rows=7 * SHARD_ROWS, rank=rank, world_size=2),
            batch_size=4, num_workers=2, multiprocessing_context="fork", timeout=120)
        batches[rank] = [as_rows(b["rule_seed"].tolist(), b["input_ids"].tolist()) for b in loader]
    assert [len(b) for b in batches.values()] == [12, 12]  # ceil(30 / 4) + ceil(15 / 4) each
    every = [row for rank in (0, 1) for b in batches[rank] for row in b]
    assert len(every) == 90 and len(set(every)) == 90
    # consumer c = rank * 2 + worker holds shards c, c + 4: rank 1's worker 1 holds shard 3 only
    expected = dealt(want, [0, 4], 30) + dealt(want, [1, 5], 15) + dealt(want, [2, 6], 30) + \
        dealt(want, [3], 15)
    assert sorted(every) == sorted(expected)


def test_too_few_shards_for_the_ranks_is_an_error_on_every_rank():
    cfg = NCAConfig(seq_len=380)
    for rank in range(3):  # 2 shards for 3 ranks: no rank starts, so none waits for another
        stream = NCAStream(cfg, "0.5-1.0", rows=30, shard_rows=15, rank=rank, world_size=3)
        with pytest.raises(ConfigError, match="lower shard_rows to at most 10"):
            next(iter(stream))
    assert len(list(NCAStream(cfg, "0.5-1.0", rows=4, shard_rows=2, rank=2, world_size=3,
                              even_ranks=False))) == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"rows": 10, "shard_rows": 0}, "shard_rows must be >= 1"),
    ({"rows": 10, "shard_rows": -5}, "shard_rows must be >= 1"),
    ({"rows": 10, "split": "validaton"}, "split must be one of"),
    ({"rows": 0}, "rows must be >= 1"),
])
def test_nca_iterable_dataset_checks_its_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        nca_iterable_dataset(NCAConfig(), "0.5-1.0", **kwargs)


def test_a_bounded_stream_cuts_shards_as_the_default_build():
    from ncagen.plan import BuildConfig, plan

    cfg = BuildConfig(out="/tmp/unused", rows=20_000, val_rows=300)
    for split in ("train", "validation"):
        built = [(t.index, t.rows, t.key) for t in plan(cfg) if t.split == split]
        rows = sum(r for _, r, _ in built)
        streamed = [(t.index, t.rows, t.key) for t in shard_tasks(
            cfg.nca, cfg.bands[0], 0, NCAStream(cfg.nca, "0.5-1.0", rows=rows, split=split).shard_rows,
            rows, split)]
        assert streamed == built and len(built) == (32 if split == "train" else 1)
