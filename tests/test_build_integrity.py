"""What a build promises about its output directory, tested with real processes and real
filesystems: one build per directory (a lock), resume that trusts only shards matching their
records, a generator fingerprint, errors found before the first write, environment failures
(disk full, read-only) as one line with nothing half-written and nothing lost, and progress
while a shard runs. A tmpfs mounted by the test stands in for a disk that fills up or turns
read-only (the tests skip where mounting is not allowed)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SMALL = ["--seq-len", "380", "--executor", "local"]


def run(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "ncagen.build", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def sha(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shards(out: pathlib.Path) -> dict[str, pathlib.Path]:
    return {str(p.relative_to(out)): p for p in sorted(out.glob("data/*/*.parquet"))}


def one_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


# the lock ------------------------------------------------------------------------------------
def test_second_build_into_a_running_builds_directory_is_refused(tmp_path):
    out = tmp_path / "out"
    args = ["--rows", "12000", "--shard-rows", "1500", *SMALL, "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-m", "ncagen.build", *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / ".ncagen.lock").exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        held = json.loads((out / ".ncagen.lock").read_text())
        assert held["pid"] == first.pid and held["host"] == socket.gethostname()
        second = run(*args)
        assert first.poll() is None, "the first build ended before the second was refused"
        assert second.returncode == 2
        line = one_line(second)
        assert "being built by another ncagen build" in line and f"process {first.pid}" in line
        _, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, err
    manifest = json.loads((out / "ncagen.json").read_text())
    assert manifest["complete"] and len(manifest["shards"]) == 8
    assert all(manifest["shards"][rel]["sha256"] == sha(p) for rel, p in shards(out).items())
    assert not (out / ".ncagen.lock").exists() and not list(out.rglob("*.tmp"))


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / ".ncagen.lock").write_text(json.dumps({
        "pid": dead.pid, "host": socket.gethostname(), "build": "deadbeef",
        "started": time.time() - 60, "refreshed": time.time() - 60}))
    res = run("--rows", "50", *SMALL, "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert not (out / ".ncagen.lock").exists()


# resume ----------------------------------------------------------------------------------------
def test_torn_altered_and_unrecorded_shards_on_resume(tmp_path):
    out = tmp_path / "out"
    args = ["--rows", "600", "--shard-rows", "100", *SMALL, "--out", str(out)]
    assert run(*args).returncode == 0
    files = shards(out)
    want = {rel: sha(p) for rel, p in files.items()}
    rels = sorted(files)
    torn, altered, unrecorded, missing = rels[0], rels[1], rels[2], rels[3]
    files[torn].write_bytes(files[torn].read_bytes()[:-1000])  # a cut-off file
    data = bytearray(files[altered].read_bytes())
    data[len(data) // 2] ^= 0x55  # same size, other bytes
    files[altered].write_bytes(bytes(data))
    files[missing].unlink()
    manifest = json.loads((out / "ncagen.json").read_text())
    del manifest["shards"][unrecorded]  # as if the driver died right after a worker's rename
    manifest["complete"] = False
    (out / "ncagen.json").write_text(json.dumps(manifest))
    kept = {rel: files[rel].stat().st_ino for rel in (unrecorded, rels[4], rels[5])}

    res = run(*args)
    assert res.returncode == 0, res.stderr
    assert f"{out / torn} does not match its record" in res.stderr
    assert f"{out / altered} does not match its record" in res.stderr
    assert "rebuilding it" in res.stderr and unrecorded not in res.stderr
    after = shards(out)
    assert {rel: sha(p) for rel, p in after.items()} == want  # rebuilt to the very same bytes
    assert all(after[rel].stat().st_ino == ino for rel, ino in kept.items())  # kept, not rewritten
    manifest = json.loads((out / "ncagen.json").read_text())
    assert manifest["complete"] and {r: s["sha256"] for r, s in manifest["shards"].items()} == want


def test_a_build_made_by_another_generator_is_refused(tmp_path):
    out = tmp_path / "out"
    args = ["--rows", "50", *SMALL, "--out", str(out)]
    assert run(*args).returncode == 0
    manifest = json.loads((out / "ncagen.json").read_text())
    manifest["generator"]["fingerprint"] = "0" * 16
    (out / "ncagen.json").write_text(json.dumps(manifest))
    before = {rel: p.stat().st_mtime_ns for rel, p in shards(out).items()}
    res = run(*args)
    assert res.returncode == 2 and "another generator" in one_line(res) and "--overwrite" in res.stderr
    assert before == {rel: p.stat().st_mtime_ns for rel, p in shards(out).items()}


def test_fingerprint_is_in_the_manifest_and_keys_the_kernel_cache(tmp_path, kernel_cache):
    from ncagen.fingerprint import fingerprint

    out = tmp_path / "out"
    cache = kernel_cache
    res = run("--rows", "20", *SMALL, "--out", str(out),
              env={**os.environ, "NCAGEN_CACHE_DIR": str(cache)})
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "ncagen.json").read_text())["generator"]["fingerprint"] == fingerprint()
    from ncagen import kernel

    src = kernel.kernel_source(10, 4, 16, 12, False, True, False)
    digest = hashlib.sha256(f"{fingerprint()}\n{src}".encode()).hexdigest()[:12]
    assert (cache / "kernels" / f"nca_n10_c4_h16_g12_{digest}.py").read_text() == src


# errors before the first write -------------------------------------------------------------
@pytest.mark.parametrize("amount", [["--rows", "inf"], ["--rows", "nan"], ["--tokens", "1e400"],
                                    ["--rows", "-5"], ["--val-rows", "inf", "--rows", "10"]])
def test_non_finite_amounts_are_refused(tmp_path, amount):
    res = run(*amount, *SMALL, "--out", str(tmp_path / "never"))
    assert res.returncode == 2 and "amount" in one_line(res)
    assert not (tmp_path / "never").exists()


def test_corrected_command_after_an_unreachable_band_just_works(tmp_path):
    out = tmp_path / "out"
    bad = run("--band", "0.5-1.0", "--states", "2", "--states", "10", "--rows", "20", *SMALL,
              "--out", str(out))
    assert bad.returncode == 2 and "unreachable for states=2" in one_line(bad)
    assert not out.exists()  # found before the first write: not even the lock
    good = run("--band", "0.5-1.0", "--states", "10", "--rows", "20", *SMALL, "--out", str(out))
    assert good.returncode == 0, good.stderr


# environment failures ----------------------------------------------------------------------
@contextlib.contextmanager
def tmpfs(size: str):
    """A small tmpfs of our own (unmounted after); skips the test where mounting is refused."""
    where = pathlib.Path(tempfile.mkdtemp(prefix="ncagen-tmpfs-"))
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        shutil.rmtree(where, ignore_errors=True)


def ray_env() -> dict:
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    return env


def test_disk_full_inside_a_ray_worker_is_one_line_and_resumable(tmp_path):
    env = ray_env()
    with tmpfs("700k") as disk:
        out = disk / "out"
        args = ["--rows", "1500", "--shard-rows", "150", "--seq-len", "380", "--out", str(out)]
        res = run(*args, env=env, timeout=300)
        assert res.returncode == 1, res.stderr
        line = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
        assert len(line) == 1 and "Traceback" not in res.stderr, res.stderr
        assert "no space left" in line[0] and "rerun the same command to resume" in line[0]
        assert not list(out.rglob("*.tmp"))  # nothing half-written under any name
        manifest = json.loads((out / "ncagen.json").read_text())
        before = shards(out)
        assert 1 <= len(before) < 10 and not manifest["complete"]
        recorded = {rel for rel in before if rel in manifest["shards"]}
        for rel in recorded:  # a recorded shard is the file under its name
            assert manifest["shards"][rel]["sha256"] == sha(before[rel])
        for rel in set(before) - recorded:  # one that finished as the build went down:
            assert pq.ParquetFile(before[rel]).metadata.num_rows == 150  # whole, to be adopted
        inodes = {rel: p.stat().st_ino for rel, p in before.items()}
        digests = {rel: sha(p) for rel, p in before.items()}
        subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
        res = run(*args, env=env, timeout=300)
        assert res.returncode == 0, res.stderr
        after = shards(out)
        assert len(after) == 10 and all(after[r].stat().st_ino == i for r, i in inodes.items())
        final = json.loads((out / "ncagen.json").read_text())["shards"]
        assert all(final[rel]["sha256"] == d for rel, d in digests.items())  # kept, not rebuilt
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


def test_read_only_output_is_one_line(tmp_path):
    with tmpfs("2m") as disk:
        (disk / "out").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        res = run("--rows", "20", *SMALL, "--out", str(disk / "out"))
        assert res.returncode == 1
        line = one_line(res)
        assert "permission denied" in line and str(disk / "out") in line


# progress --------------------------------------------------------------------------------------
def test_progress_reports_rows_while_a_shard_runs(tmp_path):
    res = run("--rows", "30000", "--shard-rows", "30000", *SMALL, "--out", str(tmp_path / "out"),
              env={**os.environ, "NCAGEN_PROGRESS_SECONDS": "0.3"})
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("[ncagen] 0/1 shards")]
    counts = [int(ln.split()[3].split("/")[0].replace(",", "")) for ln in lines]
    assert any(0 < c < 30000 for c in counts), res.stderr  # rows seen before the shard finished
    assert all("tok/s" in ln and "ETA" in ln for ln in lines)
    assert "[ncagen] 1/1 shards  30,000/30,000 rows" in res.stderr


@pytest.mark.parametrize("seq_len", [380, 1024])
def test_a_shard_file_depends_on_its_rows_not_their_batches(tmp_path, seq_len):
    """The same rows, handed to the writer in batches of other sizes (a widened shard's or
    another device's units), make the same file bytes, also where a row is not a whole batch
    of the Parquet writer's values (seq_len 380)."""
    import numpy as np

    from ncagen import shards
    from ncagen.config import Band, NCAConfig
    from ncagen.generate import generate
    from ncagen.storage import Storage

    cfg = NCAConfig(seq_len=seq_len)
    rows = list(generate(cfg, Band(0.5, 1.0), 7, 3000))  # pages of 1 MiB: several per file
    whole = {k: np.concatenate([b[k] for b in rows]) for k in rows[0]}
    digests = set()
    for cuts in ([3000], [1234, 1766], [1, 1500, 1499], [1003] * 2 + [994]):
        edges = np.cumsum([0, *cuts])
        tables = (shards.to_table({k: v[lo:hi] for k, v in whole.items()}, cfg, "band_50_100")
                  for lo, hi in zip(edges[:-1], edges[1:]))
        store = Storage(str(tmp_path / f"s{len(digests)}-{len(cuts)}"))
        res = shards.write_shard(store, "x.parquet", tables, shards.schema(cfg),
                                 lambda: {"tokens": 0})
        digests.add(res.sha256)
    assert len(digests) == 1, digests
