"""A release on the stand-in Hub loads with the user's own calls through the real clients.

A small build is published with `python -m ncagen.publish`'s entry point to tests/hub_server.py;
then `datasets.load_dataset` reads it by repo id, with `HF_ENDPOINT` pointing at the stand-in,
online and from an empty cache: a config, the default config, a stream split over ranks, and
pinned revisions (tags and a branch). Every row equals the local build's. The same releases
back the checks that streamed configs split over ranks give every rank (and every DataLoader
worker) the same number of rows, and a 32-consumer check: 8 ranks x 4 DataLoader workers over
a config of 32 files per split, none empty.
"""

from __future__ import annotations

import itertools

import pyarrow.parquet as pq
import pytest
import torch

from ncagen.build import main as build_main
from ncagen.publish import main as publish_main
from ncagen.stream import even_split, load_rank_stream, manifest_file_rows

# huggingface_hub's LFS PUT passes a file as `data=`, which its HTTP client flags as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

REPO = "ncagen-org/nca-trajectories"
SEQ_LEN = 380
ROWS, SHARD_ROWS = 128, 4  # A: 32 files per split and config
OLD_ROWS, OLD_SHARD_ROWS = 50, 20  # B: files of 20, 20 and 10 rows
COLUMNS = ("input_ids", "gzip_ratio", "zstd_ratio", "states", "band", "rule_seed", "sim")


def build(out, *args) -> None:
    assert build_main([*args, "--seq-len", str(SEQ_LEN), "--batch", "256", "--executor", "local",
                       "--out", str(out)]) == 0


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """A: two bands, 128 train and 128 validation rows each in files of 4; B (an older, other
    release): one band, seed 1, 50 + 50 rows in files of 20."""
    root = tmp_path_factory.mktemp("hub_load")
    build(root / "a", "--band", "0.3-0.4", "--band", "0.5-1.0", "--rows", str(ROWS),
          "--val-rows", str(ROWS), "--shard-rows", str(SHARD_ROWS))
    build(root / "b", "--band", "0.5-1.0", "--rows", str(OLD_ROWS), "--val-rows", str(OLD_ROWS),
          "--shard-rows", str(OLD_SHARD_ROWS), "--seed", "1")
    return {"a": root / "a", "b": root / "b"}


@pytest.fixture(scope="module")
def hub(module_hub, builds):
    """The repo's history: B on main tagged v0.1, then A on main tagged v1.0, then B again on the
    branch legacy/v0; so main and v1.0 hold A, v0.1 and legacy/v0 hold B."""
    import datasets

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_ENDPOINT", module_hub.url)  # read once, at import
        mp.setattr(datasets.config, "HF_HUB_OFFLINE", False)
        for args in ([builds["b"], "--tag", "v0.1"], [builds["a"], "--tag", "v1.0"],
                     [builds["b"], "--revision", "legacy/v0"]):
            assert publish_main([str(args[0]), "--repo", REPO, *args[1:]]) == 0
        yield module_hub


def file_rows(out, config: str, split: str) -> list[list[dict]]:
    """The rows of each Parquet file of a split, files in order, as the build wrote them."""
    files = sorted((out / "data" / config).glob(f"{split}-*.parquet"))
    assert files
    return [pq.read_table(f).to_pylist() for f in files]


def flat(files: list[list[dict]]) -> list[dict]:
    return [row for rows in files for row in rows]


def key(row: dict) -> tuple:
    """A row as a hashable value, every column."""
    return tuple(tuple(row[c]) if c == "input_ids" else row[c] for c in COLUMNS)


def rows_of(ds) -> list[dict]:
    return [{c: row[c] for c in COLUMNS} for row in ds]


def served_data(hub, revision_fragment: str = "/resolve/") -> int:
    """How many data files the stand-in has served (a cold cache must read them from it)."""
    return len([r for r in hub.requests_to("GET", revision_fragment) if "/data/" in r.path])


def test_load_a_config_by_repo_id(hub, builds, tmp_path):
    from datasets import load_dataset

    before = served_data(hub)
    ds = load_dataset(REPO, "band_30_40", cache_dir=str(tmp_path / "cache"))

    assert set(ds) == {"train", "validation"}
    for split in ("train", "validation"):
        assert rows_of(ds[split]) == flat(file_rows(builds["a"], "band_30_40", split))
    assert served_data(hub) - before == 64  # every file of the config, from the stand-in


def test_preview_config_images_by_repo_id(hub, builds, tmp_path):
    """The viewer's preview config: images that decode, from the stand-in, one set per config."""
    import pyarrow.parquet as pq
    from datasets import load_dataset

    ds = load_dataset(REPO, "preview", split="train", cache_dir=str(tmp_path / "cache"))
    local = pq.read_table(builds["a"] / "preview" / "train-00000-of-00001.parquet").to_pydict()
    assert ds["rule_seed"] == local["rule_seed"] and set(ds["band"]) == {"band_30_40", "band_50_100"}
    image = ds[0]["image"]
    assert image.size[0] > 0 and image.size[1] > 0  # a PIL image, decoded by datasets


def test_default_config_has_no_name(hub, builds, tmp_path):
    from datasets import load_dataset

    ds = load_dataset(REPO, split="validation", cache_dir=str(tmp_path / "cache"))

    assert rows_of(ds) == flat(file_rows(builds["a"], "band_50_100", "validation"))


def test_streaming_split_over_two_ranks(hub, builds, tmp_path):
    from datasets import load_dataset
    from datasets.distributed import split_dataset_by_node

    ds = load_dataset(REPO, "band_30_40", streaming=True, cache_dir=str(tmp_path / "cache"))
    for split in ("train", "validation"):
        files = file_rows(builds["a"], "band_30_40", split)
        assert ds[split].num_shards == len(files) == 32
        parts = [rows_of(split_dataset_by_node(ds[split], rank, 2)) for rank in (0, 1)]
        for rank, part in enumerate(parts):  # whole files, dealt round-robin
            assert part == flat(files[rank::2])
        assert sorted(map(key, parts[0] + parts[1])) == sorted(map(key, flat(files)))


@pytest.mark.parametrize(
    "revision, build_name, config",
    [("v1.0", "a", "band_30_40"), ("v0.1", "b", "band_50_100"), ("legacy/v0", "b", "band_50_100")],
)
def test_pinned_revision(hub, builds, tmp_path, revision, build_name, config):
    """Tags and a branch, read while main holds another release."""
    from datasets import load_dataset

    ds = load_dataset(REPO, config, revision=revision, cache_dir=str(tmp_path / "cache"))

    for split in ("train", "validation"):
        assert rows_of(ds[split]) == flat(file_rows(builds[build_name], config, split))
    main_rows = flat(file_rows(builds["a"], config, "train"))
    assert (rows_of(ds["train"]) == main_rows) == (build_name == "a")
    if build_name == "b":
        with pytest.raises(ValueError, match="band_30_40"):  # that config came later
            load_dataset(REPO, "band_30_40", revision=revision, cache_dir=str(tmp_path / "c2"))


def expected_even(files: list[list[dict]], rank: int, world_size: int, rows: int) -> list[dict]:
    """What rank `rank` keeps: whole files dealt round-robin when their number divides by
    world_size, else every world_size-th row; then the first `rows`."""
    if len(files) % world_size == 0:
        return flat(files[rank::world_size])[:rows]
    return flat(files)[rank::world_size][:rows]


@pytest.mark.parametrize(
    "revision, build_name, config, world_size, per_rank",
    [
        ("v0.1", "b", "band_50_100", 2, 25),  # 3 files for 2 ranks: rows dealt, none dropped
        ("v0.1", "b", "band_50_100", 3, 10),  # files of 20, 20, 10: the short one decides
        ("v1.0", "a", "band_30_40", 3, 42),  # 32 files for 3 ranks: rows dealt, 2 dropped
        ("v1.0", "a", "band_30_40", 2, 64),  # 32 files for 2 ranks: files dealt, none dropped
    ],
)
def test_rank_stream_gives_every_rank_the_same_rows(
    hub, builds, tmp_path, revision, build_name, config, world_size, per_rank
):
    files = file_rows(builds[build_name], config, "train")
    parts = []
    for rank in range(world_size):
        part = load_rank_stream(REPO, config, rank=rank, world_size=world_size, revision=revision,
                                cache_dir=str(tmp_path / "cache"))
        parts.append(rows_of(part))
        assert part.rows() == per_rank
    assert [len(p) for p in parts] == [per_rank] * world_size
    every = [key(row) for part in parts for row in part]
    assert len(set(every)) == len(every)
    for rank, part in enumerate(parts):
        assert part == expected_even(files, rank, world_size, per_rank)


def worker_rows(ds, world_size: int, workers: int) -> dict[tuple[int, int], list[tuple]]:
    """(rank, worker) -> the rows a real DataLoader worker of that rank yields; `ds(rank)` is
    the rank's dataset, its rows carrying the column `worker` (see tag_worker_column)."""
    got: dict[tuple[int, int], list[tuple]] = {}
    for rank in range(world_size):
        loader = torch.utils.data.DataLoader(ds(rank), batch_size=None, num_workers=workers,
                                             multiprocessing_context="fork", timeout=120)
        for row in loader:
            got.setdefault((rank, int(row["worker"])), []).append(key(row))
    return got


def test_32_consumers_are_never_empty(builds, tmp_path):
    """8 ranks x 4 DataLoader workers over a config of 32 files: with split_dataset_by_node as
    users call it and with load_rank_stream, every consumer reads rows and every row comes
    once; load_rank_stream's consumers all get the same count."""
    from datasets import load_dataset
    from datasets.distributed import split_dataset_by_node

    out, config = builds["a"], "band_50_100"
    files = file_rows(out, config, "train")
    stream = load_dataset(str(out), config, split="train", streaming=True,
                          cache_dir=str(tmp_path / "cache")).map(tag_worker_column)
    plain = worker_rows(lambda rank: split_dataset_by_node(stream, rank, 8), 8, 4)
    assert sorted(plain) == [(r, w) for r in range(8) for w in range(4)]  # nobody empty
    assert all(len(rows) == SHARD_ROWS for rows in plain.values())
    every = sorted(itertools.chain.from_iterable(plain.values()))
    assert every == sorted(map(key, flat(files)))

    counts = manifest_file_rows(str(out), config, "train")
    assert counts == [SHARD_ROWS] * 32
    even = worker_rows(lambda rank: even_split(stream, rank, 8, counts), 8, 4)
    assert {k: len(v) for k, v in even.items()} == {k: SHARD_ROWS for k in plain}
    assert even == plain  # nothing to drop: the same rows in the same workers


def tag_worker_column(row: dict) -> dict:
    """The id of the DataLoader worker that reads the row (map runs lazily, in the worker)."""
    info = torch.utils.data.get_worker_info()
    return {"worker": info.id if info is not None else -1}
