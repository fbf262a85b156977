"""The build command end to end (in-process executor): files, rows, errors, determinism."""

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from ncagen.complexity import gzip_ratio_of_row
from ncagen.config import NCAConfig

SMALL = ["--seq-len", "380", "--executor", "local"]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ncagen.build", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "ds"
    res = run("--band", "0.5-1.0", "--band", "0.3-0.4", "--rows", "300", "--shard-rows", "200",
              "--val-rows", "50", "--out", str(out), "--seed", "3", *SMALL)
    assert res.returncode == 0, res.stderr
    return out, res


def _table(out, config, split="train"):
    files = sorted((out / "data" / config).glob(f"{split}-*.parquet"))
    return pq.read_table(files).to_pydict(), files


def test_layout_and_columns(built):
    out, res = built
    rows, files = _table(out, "band_50_100")
    assert [f.name for f in files] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert len(rows["input_ids"]) == 300
    assert all(len(r) == 380 for r in rows["input_ids"])
    assert set(rows["band"]) == {"band_50_100"} and set(rows["states"]) == {10}
    val, _ = _table(out, "band_30_40", "validation")
    assert len(val["input_ids"]) == 50
    assert "band_30_40" in res.stdout and "acceptance" in res.stdout


def test_every_row_verifies(built):
    out, _ = built
    cfg = NCAConfig(seq_len=380)
    for config, (lo, hi) in {"band_50_100": (0.5, 1.0), "band_30_40": (0.3, 0.4)}.items():
        rows, _ = _table(out, config)
        for ids, r in zip(rows["input_ids"], rows["gzip_ratio"]):
            assert lo < r < hi
            assert gzip_ratio_of_row(ids, cfg) == np.float32(r)


def test_validation_rules_disjoint_from_train(built):
    out, _ = built
    train, _ = _table(out, "band_50_100")
    val, _ = _table(out, "band_50_100", "validation")
    assert not set(train["rule_seed"]) & set(val["rule_seed"])


def test_manifest_matches_files(built):
    import hashlib

    out, _ = built
    manifest = json.loads((out / "ncagen.json").read_text())
    assert manifest["complete"] and len(manifest["shards"]) == 2 * (2 + 1)
    for rel, s in manifest["shards"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == s["sha256"]
        assert pq.ParquetFile(out / rel).metadata.num_rows == s["rows"]
    part = manifest["partitions"]["band_30_40"]
    assert part["splits"]["train"]["rows"] == 300 and 0.05 < part["acceptance_rate"] < 0.2


def test_same_command_same_rows(built, tmp_path):
    out, _ = built
    again = tmp_path / "again"
    res = run("--band", "0.5-1.0", "--rows", "300", "--shard-rows", "200", "--val-rows", "50",
              "--out", str(again), "--seed", "3", *SMALL)
    assert res.returncode == 0, res.stderr
    a, _ = _table(out, "band_50_100")
    b, _ = _table(again, "band_50_100")
    assert a == b
    c, _ = _table(again, "band_50_100", "validation")
    d, _ = _table(out, "band_50_100", "validation")
    assert c == d


def test_rerun_is_a_noop_and_other_config_refused(built):
    out, _ = built
    before = {p: p.stat().st_mtime_ns for p in (out / "data").rglob("*.parquet")}
    res = run("--band", "0.5-1.0", "--band", "0.3-0.4", "--rows", "300", "--shard-rows", "200",
              "--val-rows", "50", "--out", str(out), "--seed", "3", *SMALL)
    assert res.returncode == 0, res.stderr
    assert before == {p: p.stat().st_mtime_ns for p in (out / "data").rglob("*.parquet")}
    res = run("--band", "0.5-1.0", "--rows", "300", "--out", str(out), "--seed", "4", *SMALL)
    assert res.returncode == 2 and "different config" in res.stderr
    assert before == {p: p.stat().st_mtime_ns for p in (out / "data").rglob("*.parquet")}


@pytest.mark.parametrize("args, words", [
    (["--band", "0.6-0.5", "--rows", "10"], "0 <= LO < HI <= 1"),
    (["--band", "half", "--rows", "10"], "not of the form LO-HI"),
    (["--states", "1", "--rows", "10"], "states must be"),
    (["--rows", "0"], "must be a whole number >= 1"),
    (["--patch", "5", "--rows", "10"], "does not divide"),
    (["--patch", "4", "--rows", "10"], "int32"),
    (["--seq-len", "20", "--rows", "10"], "too short for one grid"),
    (["--temperature", "0", "--rows", "10"], "temperature"),
    (["--tokens", "1Q"], "--tokens amount '1Q' is not a number"),
    pytest.param(["--rows", "10", "--device", "cuda:0"], "no CUDA", marks=pytest.mark.skipif(
        _cuda(), reason="a CUDA GPU is visible: --device cuda is not an error here")),
    ([], "--rows or --tokens"),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, args, words):
    out = tmp_path / "never"
    res = run(*args, "--out", str(out), "--executor", "local")
    assert res.returncode == 2
    assert words in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr
    assert not out.exists()


def test_foreign_non_empty_directory_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    res = run("--rows", "10", "--out", str(tmp_path), "--executor", "local")
    assert res.returncode == 2 and "not empty" in res.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_unreachable_band_exits_2(tmp_path, executor):
    # on the default executor the band is probed while the private Ray starts (a real one):
    # the error is still the only line, without Ray's notice that token auth is on
    out = tmp_path / "x"
    res = run("--band", "0.5-1.0", "--states", "2", "--rows", "10", "--out", str(out),
              "--executor", executor)
    assert res.returncode == 2
    assert "unreachable for states=2" in res.stderr and len(res.stderr.strip().splitlines()) == 1, \
        res.stderr
    assert not list(out.rglob("*.parquet"))


def test_build_to_filesystem_url():
    """Output paths may be fsspec URLs: build in-process into memory:// and read it back."""
    import fsspec

    from ncagen.build import main

    assert main(["--rows", "40", "--seq-len", "380", "--executor", "local",
                 "--out", "memory://ncagen-test/ds"]) == 0
    fs = fsspec.filesystem("memory")
    files = fs.find("/ncagen-test/ds")
    assert "/ncagen-test/ds/ncagen.json" in files
    with fs.open("/ncagen-test/ds/data/band_50_100/train-00000-of-00001.parquet", "rb") as f:
        assert pq.read_table(f).num_rows == 40


def test_config_difference_names_what_changed_and_survives_a_damaged_record():
    from ncagen.build import config_difference

    ours = {"shard_rows": {"train": 625, "validation": 1}, "seed": 0, "nca": {"grid": 12}}
    said = config_difference({"shard_rows": 100000, "seed": 0, "nca": {"grid": 12}}, ours)
    assert said == "shard_rows: 100000 there, {'train': 625, 'validation': 1} now"
    assert "grid: 16 there, 12 now" in config_difference({**ours, "nca": {"grid": 16}}, ours)
    assert "there" in config_difference("not a dict", ours)  # a line, not a traceback
    assert "there" in config_difference({**ours, "nca": [1]}, ours)


@pytest.mark.parametrize("busy", [False, True])
def test_exit_now_keeps_the_status_the_output_and_the_exit_handlers(tmp_path, busy):
    """`exit_now`, how the commands end (skipping the interpreter's teardown): the status
    stands, buffered output and exit handlers are not lost, ncagen's idle thread pools and a
    still-running non-daemon thread (then the ordinary exit, which waits) finish first."""
    script = f"""
import atexit, pathlib, sys, threading, time
from ncagen.cli import exit_now
from ncagen.threads import pool
tmp = pathlib.Path({str(tmp_path)!r})
atexit.register(lambda: (tmp / "handler").write_text("ran"))
pool(2, "t").submit(lambda: (time.sleep(0.3), (tmp / "pooled").write_text("done")))
if {busy}:
    threading.Thread(target=lambda: (time.sleep(0.5), (tmp / "thread").write_text("done"))).start()
sys.stdout.write("no newline, still buffered")
exit_now(3)
print("not reached")
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 3, res.stderr
    assert res.stdout == "no newline, still buffered"
    assert (tmp_path / "handler").read_text() == "ran"
    assert (tmp_path / "pooled").read_text() == "done"
    assert (tmp_path / "thread").exists() == busy
