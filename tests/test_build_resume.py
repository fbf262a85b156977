"""Resume after a crash: SIGKILL a Ray build (driver, embedded Ray and workers) part-way, run the
same command again, and get byte for byte the dataset of an uninterrupted build."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from procs import reap_session

pytest.importorskip("ray")

REPO = pathlib.Path(__file__).resolve().parents[1]
ARGS = ["--rows", "1600", "--shard-rows", "200", "--seq-len", "380"]  # 8 shards




def shards_of(out: pathlib.Path) -> dict[str, os.stat_result]:
    return {str(p.relative_to(out)): p.stat() for p in out.glob("data/*/*.parquet")}


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def ray_env(tmp_path):
    """Environment for a build with its own embedded Ray: private temp dir and auth token."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # socket paths must be short
    env = {**os.environ, "RAY_TMPDIR": str(tmp), "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    yield env
    shutil.rmtree(tmp, ignore_errors=True)


def test_killed_build_resumes_to_the_uninterrupted_dataset(tmp_path, ray_env):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ncagen.build", *ARGS, "--out", str(out), "--executor", "ray"]
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(cmd, cwd=tmp_path, env=ray_env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not shards_of(out) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        os.killpg(first.pid, signal.SIGKILL)  # the driver, its raylet/GCS and what they started
        first.wait()
    finally:
        stragglers = reap_session(first.pid)
    assert not stragglers, f"Ray processes outlived their driver: {stragglers}"
    before = shards_of(out)
    assert 1 <= len(before) < 8, "the kill did not land part-way"
    assert json.loads((out / "ncagen.json").read_text())["complete"] is False

    second = subprocess.Popen(cmd, cwd=tmp_path, env=ray_env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = second.communicate(timeout=300)
    finally:
        second.kill()
        stragglers = reap_session(second.pid)
    assert second.returncode == 0, err
    assert not stragglers, f"Ray processes outlived a finished build: {stragglers}"
    assert "[ncagen] 8/8 shards  1,600/1,600 rows" in err
    after = shards_of(out)
    assert len(after) == 8 and not list(out.rglob("*.tmp"))
    for rel, st in before.items():  # a finished shard is never rewritten
        assert (after[rel].st_ino, after[rel].st_mtime_ns) == (st.st_ino, st.st_mtime_ns), rel
    manifest = json.loads((out / "ncagen.json").read_text())
    assert manifest["complete"] is True
    assert {rel: s["sha256"] for rel, s in manifest["shards"].items()} == {
        rel: sha256(out / rel) for rel in after}

    from ncagen.build import main

    ref = tmp_path / "ref"
    assert main([*ARGS, "--out", str(ref), "--executor", "local"]) == 0
    assert shards_of(ref).keys() == after.keys()
    assert all(sha256(ref / rel) == sha256(out / rel) for rel in after)

    # the same directory with another config is refused, and nothing in it changes
    res = subprocess.run([*cmd, "--seed", "1"], cwd=tmp_path, env=ray_env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and "--overwrite" in res.stderr and len(res.stderr.splitlines()) == 1
    assert shards_of(out) == after


def test_last_shard_takes_the_cores_the_others_left(tmp_path, ray_env):
    """Embedded Ray, 2 CPUs, a 15,000-row shard beside a 500-row one: once the small one is
    done and no shard waits, the big one widens to both cores (its record says so), and the
    rows are those of a single-process build (rows never depend on the thread count). The big
    shard outlives the small one by about 2 s here, several of the widener's asks."""
    args = ["--rows", "15500", "--shard-rows", "15000", "--seq-len", "380"]
    out, ref = tmp_path / "out", tmp_path / "ref"
    res = subprocess.run([sys.executable, "-m", "ncagen.build", *args, "--out", str(out),
                          "--executor", "ray"], cwd=tmp_path, env=ray_env,
                         capture_output=True, text=True, timeout=300, start_new_session=True)
    assert res.returncode == 0, res.stderr
    records = json.loads((out / "ncagen.json").read_text())["shards"]
    threads = {r["rows"]: r["threads"] for r in records.values()}
    cores = len(os.sched_getaffinity(0))  # what the embedded Ray declares (2 in CI)
    assert threads == {15000: cores, 500: max(1, cores // 2)}, threads

    from ncagen.build import main

    assert main([*args, "--out", str(ref), "--executor", "local"]) == 0
    assert shards_of(ref).keys() == shards_of(out).keys()
    assert all(sha256(ref / rel) == sha256(out / rel) for rel in shards_of(out))


def test_private_ray_stops_its_monitor_before_the_rest(tmp_path, ray_env):
    """The build's close kills a private Ray's autoscaler monitor first (left to ray.shutdown,
    it is sent SIGTERM after the GCS is gone and hangs a second before being killed): the
    monitor is gone, the GCS still up and the cluster still runs tasks; then shutdown
    leaves no process behind. A real private Ray (ray.init) stands in for a user's."""
    script = """
import ray
from ncagen.executors import _stop_monitor
ray.init(num_cpus=1, include_dashboard=False)
procs = ray._private.worker._global_node.all_processes
monitor, gcs = procs["monitor"][0].process, procs["gcs_server"][0].process
assert monitor.poll() is None, "no monitor running to begin with"
_stop_monitor()
assert monitor.poll() is not None, "the monitor survived"
assert gcs.poll() is None, "the GCS went with it"
assert ray.get(ray.remote(lambda: 7).remote()) == 7
ray.shutdown()
print("ok")
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=ray_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        stragglers = reap_session(proc.pid)
    assert proc.returncode == 0 and out.strip() == "ok", err[-3000:]
    assert not stragglers, f"Ray processes outlived ray.shutdown: {stragglers}"
