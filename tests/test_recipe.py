"""Release recipes (`ncagen build --recipe`) and `--shard-rows auto`."""

import hashlib
import json
import re
import subprocess
import sys

import pytest

from ncagen.cli import build_main
from ncagen.config import Band, ConfigError
from ncagen.plan import (AUTO, BYTES_PER_TOKEN, MIN_FILE_BYTES, MIN_FILES, TARGET_FILE_BYTES,
                         BuildConfig, auto_shard_rows, plan)
from ncagen.recipe import load_recipe, recipe_config

TINY = {
    "version": "0.0-test",
    "seed": 5,
    "rows": 320,
    "val_rows": 16,
    "shard_rows": "auto",
    "nca": {"seq_len": 380},
    "alphabets": [{"states": 10, "bands": ["0.5-1.0"]}, {"states": 15, "bands": ["0.4-0.5"]}],
}


def _files(total: int, size: int) -> int:
    return -(-total // size)


@pytest.fixture
def no_file_floor(monkeypatch):
    """Cut a tiny split as `auto` cuts a release's (32 + 8 files): the size floor that gives a
    small split fewer files is off, so these tests exercise the release's cut in seconds."""
    import ncagen.plan

    monkeypatch.setattr(ncagen.plan, "MIN_FILE_BYTES", 0)


@pytest.mark.parametrize("total, seq_len, split, want", [
    (160_000, 1024, "train", 5_000),  # the release: 32 files of ~9 MB (164M tokens cannot fill 32 x 50 MB)
    (4_096, 1024, "validation", 512),
    (20_000, 1024, "train", 625),  # the README's first build: 32 files of ~1.1 MB
    (50_000, 1024, "train", 1_563),  # rounded up: 32 files, the last of 1,547 rows (not 33)
    (195_313, 1024, "train", 6_104),  # --tokens 200M: 32 files, the last of 6,089 rows
    (0, 1024, "validation", 1),
])
def test_auto_shard_rows(total, seq_len, split, want):
    assert auto_shard_rows(total, seq_len, MIN_FILES[split]) == want


@pytest.mark.parametrize("total, seq_len, want", [
    (5_000, 1024, 295),  # 8.9 MB: 17 files of >= 0.5 MB (rows rounded up), not 32 of 0.28 MB
    (1_500, 380, 1_500),  # under 1 MB: one file
    (40, 380, 40),
])
def test_a_small_split_gets_fewer_files_of_at_least_the_floor(total, seq_len, want):
    size = auto_shard_rows(total, seq_len, 32)
    assert size == want
    files = _files(total, size)
    assert files < 32 and (files == 1 or size * seq_len * BYTES_PER_TOKEN >= MIN_FILE_BYTES)


@pytest.mark.parametrize("total", [9_100, 9_101, 20_031, 50_000, 123_457, 1_000_001])
def test_auto_gives_whole_files_to_every_consumer(total):
    """A 32-way job's split_dataset_by_node deals whole files only when the file count divides
    by 32: a split of any size past the small-split floor gets exactly 32 files (8 for
    validation), the last shorter by fewer rows than there are files."""
    for split, want in MIN_FILES.items():
        size = auto_shard_rows(total, 1024, want)
        files = _files(total, size)
        assert files % want == 0, (split, total, size, files)
        assert 0 <= files * size - total < files


@pytest.mark.parametrize("total, want", [
    (100, 3),  # rounding up would give 25 files: floor instead, 34 files (the last of 1 row)
    (10, 1),  # fewer rows than files: one row a file
])
def test_auto_shard_rows_without_the_floor(no_file_floor, total, want):
    assert auto_shard_rows(total, 1024, 32) == want


def test_a_remainder_makes_no_extra_file(no_file_floor):
    """Rows that do not divide by the file count: still 32 train and 8 validation files (0.2.x
    cut one more, short file), equal but for the last, and together the split's rows."""
    cfg = BuildConfig(out="/tmp/unused", executor="local", rows=1_000, val_rows=100)
    for split, files, size, last in (("train", 32, 32, 8), ("validation", 8, 13, 9)):
        tasks = [t for t in plan(cfg) if t.split == split]
        assert [t.index for t in tasks] == list(range(files))
        assert {t.count for t in tasks} == {files}
        assert [t.rows for t in tasks] == [size] * (files - 1) + [last]
    assert cfg.identity()["shard_rows"] == {"train": 32, "validation": 13}


def test_the_default_is_auto():
    cfg = BuildConfig(out="/tmp/unused", rows=20_000)
    assert cfg.shard_rows == AUTO and len([t for t in plan(cfg) if t.split == "train"]) == 32


@pytest.mark.parametrize("total", [1_000_000, 5_000_000, 40_000_000])
def test_auto_shard_rows_large_splits_stay_under_the_target(total):
    size = auto_shard_rows(total, 1024, 32)
    files = _files(total, size)
    assert files >= 32 and files % 32 == 0
    assert size * 1024 * BYTES_PER_TOKEN <= TARGET_FILE_BYTES
    # the fewest multiple of 32 files that keeps under the target: one step fewer overflows
    fewer = files - 32
    assert fewer < 32 or total / fewer * 1024 * BYTES_PER_TOKEN > TARGET_FILE_BYTES


def test_plan_with_auto_and_pairs(no_file_floor):
    cfg = BuildConfig(out="/tmp/unused", executor="local", **recipe_config(TINY))
    tasks = plan(cfg)
    names = {t.config_name for t in tasks}
    assert names == {"band_50_100", "band_40_50_states_15"}  # not the 2 x 2 product
    train = [t for t in tasks if t.config_name == "band_50_100" and t.split == "train"]
    val = [t for t in tasks if t.config_name == "band_50_100" and t.split == "validation"]
    assert len(train) == 32 and sum(t.rows for t in train) == 320
    assert len(val) == 8 and sum(t.rows for t in val) == 16
    assert cfg.identity()["partitions"] == ["10:0.5-1", "15:0.4-0.5"]
    assert cfg.identity()["shard_rows"] == {"train": 10, "validation": 2}


def test_flag_builds_keep_their_identity():
    """Existing commands plan and record exactly what they did before recipes."""
    cfg = BuildConfig(out="/tmp/unused", bands=(Band(0.5, 1.0), Band(0.3, 0.4)), states=(10, 15),
                      rows=300, shard_rows=200)
    ident = cfg.identity()
    assert "partitions" not in ident and ident["shard_rows"] == 200
    assert [(t.config_name, t.split, t.rows) for t in plan(cfg)][:3] == [
        ("band_50_100", "train", 200), ("band_50_100", "train", 100), ("band_30_40", "train", 200)]


@pytest.mark.parametrize("change, message", [
    ({"shard_size": 5}, "unknown key 'shard_size'"),
    ({"nca": {"seqlen": 380}}, "unknown key 'seqlen' in 'nca'"),
    ({"rows": "lots"}, "is not a number"),
    ({"rows": None}, "'rows' must be an integer"),
    ({"tokens": "1M"}, "exactly one of 'rows' or 'tokens'"),
    ({"seed": -1}, "seed must be in 0 "),
    ({"seed": True}, "'seed' must be an integer"),
    ({"shard_rows": 0}, "must be a whole number >= 1"),
    ({"version": ""}, "'version' must be a non-empty string"),
    ({"alphabets": []}, "'alphabets' must be a non-empty list"),
    ({"alphabets": [{"states": 10, "bands": ["0.5-1.0"]}] * 2}, "states 10 is listed twice"),
    ({"alphabets": [{"states": 10, "bands": ["0.5-1.0", "0.5-1"]}]}, "a band is repeated"),
    ({"alphabets": [{"states": 10, "bands": ["high"]}]}, "is not of the form LO-HI"),
    ({"alphabets": [{"states": 1, "bands": ["0.5-1.0"]}]}, "states must be an integer >= 2"),
    ({"nca": {"seq_len": 100}}, "cannot hold the first 10 grids"),
])
def test_bad_recipes_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        BuildConfig(out="/tmp/unused", executor="local", **recipe_config({**TINY, **change}))


def test_the_release_recipe():
    """The repository's recipe names the published dataset."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "dataset_cards" / "nca-trajectories" / "recipe.json"
    cfg = BuildConfig(out="/tmp/unused", **load_recipe(str(path)))
    names = {t.config_name for t in plan(cfg)}
    assert len(names) == 11 and "band_50_100_states_5" not in names
    assert cfg.train_rows * cfg.nca.seq_len == 163_840_000 and cfg.shard_rows == AUTO
    assert cfg.split_shard_rows("train") == 5_000 and cfg.split_shard_rows("validation") == 512


def _recipe(tmp_path, raw=TINY):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(raw))
    return str(path)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "ncagen", "build", *args], capture_output=True,
                          text=True, timeout=300)


def test_recipe_cli_refusals(tmp_path):
    recipe = _recipe(tmp_path)
    out = tmp_path / "out"
    res = _run("--recipe", recipe, "--out", str(out), "--rows", "10", "--seed", "1")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "--rows, --seed: the recipe sets what a build holds" in res.stderr
    bad = _recipe(tmp_path, {**TINY, "colour": "blue"})
    res = _run("--recipe", bad, "--out", str(out), "--executor", "local")
    assert res.returncode == 2 and "unknown key 'colour'" in res.stderr, res.stderr
    res = _run("--recipe", str(tmp_path / "none.json"), "--out", str(out))
    assert res.returncode == 2 and "cannot read it" in res.stderr
    assert not out.exists()


@pytest.mark.parametrize("change, message", [
    ({"seed": -1}, "seed must be in 0 "),  # checked by BuildConfig, not by the recipe's reader
    ({"val_fraction": 1.5, "val_rows": None}, "val-fraction must be in"),
    ({"nca": {"temperature": -1.0}}, "temperature must be > 0"),
])
def test_a_recipes_values_are_refused_with_its_path(tmp_path, change, message):
    raw = {k: v for k, v in {**TINY, **change}.items() if v is not None}  # None: key left out
    path = _recipe(tmp_path, raw)
    with pytest.raises(ConfigError, match=f"^recipe {re.escape(path)}: {message}"):
        load_recipe(path)


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.glob("data/*/*.parquet"))}


def test_recipe_builds_the_same_files_twice(tmp_path, capsys, no_file_floor):
    from ncagen.stream import NCAStream, read_build

    recipe = _recipe(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    assert build_main(["--recipe", recipe, "--out", str(a), "--executor", "local"]) == 0
    assert build_main(["--recipe", recipe, "--out", str(b), "--executor", "local",
                       "--workers", "1", "--batch", "256"]) == 0
    da, db = _digests(a), _digests(b)
    assert len(da) == 2 * (32 + 8) and da == db
    manifest = json.loads((a / "ncagen.json").read_text())
    assert manifest["release"] == "0.0-test" and manifest["complete"]
    assert sorted(manifest["partitions"]) == ["band_40_50_states_15", "band_50_100"]
    assert sum(s["rows"] for s in manifest["partitions"]["band_40_50_states_15"]["splits"].values()) == 336
    card = (a / "README.md").read_text()  # the card names the release, its changes, the recipe
    release = card[card.index("### Release"):card.index("### Load a pinned version")]
    assert "release **0.0-test**" in release and "**1.0**" in release and "Rebuilding it" in release
    assert 'revision="v0.0-test")' in card  # the pinned load names this release's tag
    assert f"--recipe {recipe}" in card and "`partitions` | n=10 0.5-1.0, n=15 0.4-0.5" in card
    # rerunning the recipe resumes (nothing to do); the stream replays a partition's rows
    assert build_main(["--recipe", recipe, "--out", str(a), "--executor", "local"]) == 0
    assert _digests(a) == da
    spec = read_build(str(a), "band_40_50_states_15")
    assert spec["cfg"].states == 15 and spec["split_shard_rows"] == {"train": 10, "validation": 2}
    stream = NCAStream.from_build(str(a), "band_40_50_states_15", split="validation")
    assert [t.rows for t in stream.tasks()] == [2] * 8
