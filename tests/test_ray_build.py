"""The Ray build on a real local Ray cluster: a job sent with `ray job submit`, and a worker
killed in the middle of a shard (Ray reruns the task).

The module starts one cluster on 127.0.0.1 (2 CPUs, its own temp dir and auth token) in a new
session, and tears it down by killing that session's processes, never anything else.
"""

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

import pyarrow.parquet as pq
import pytest
from procs import (assert_retried, child_sessions, free_port, kill_session, ray_port_flags,
                   shard_workers, wait_for_job_agent)

pytest.importorskip("ray")

REPO = pathlib.Path(__file__).resolve().parents[1]
RAY = [sys.executable, "-m", "ray.scripts.scripts"]
SMALL = ["--seq-len", "380"]




# the cluster ---------------------------------------------------------------------------------
class Cluster:
    """A local Ray cluster: its dashboard URL, its session id, the environment to talk to it."""

    def __init__(self, dashboard: str, sid: int, env: dict, temp_dir: pathlib.Path):
        self.dashboard, self.sid, self.env, self.temp_dir = dashboard, sid, env, temp_dir

    def submit(self, build_args: list[str], job_id: str, **popen) -> subprocess.Popen:
        """`ray job submit` the build (the repository as working dir); waits for the job's end."""
        cmd = [*RAY, "job", "submit", "--address", self.dashboard, "--submission-id", job_id,
               "--working-dir", str(REPO), "--", "python", "-m", "ncagen.build", *build_args]
        return subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, **popen)

    def cli(self, *args: str) -> str:
        return subprocess.run([*RAY, *args], env=self.env, capture_output=True, text=True,
                              check=True, timeout=120).stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("ray")
    # Ray's unix sockets live under the temp dir and their paths must stay under ~107 bytes
    temp_dir = base if len(str(base)) <= 40 else pathlib.Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    port, dash = free_port(), free_port()
    # every fixed default port too, so another Ray on this machine cannot collide with ours
    ports = ray_port_flags()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_task_events_report_interval_ms": "100"}
    env.pop("RAY_ADDRESS", None)
    start = subprocess.Popen(
        [*RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
         "--num-cpus=2", "--num-gpus=0", "--object-store-memory=200000000",
         *ports, f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = start.communicate(timeout=180)
        assert start.returncode == 0, log
        c = Cluster(f"http://127.0.0.1:{dash}", start.pid, env, temp_dir)
        wait_for_job_agent(RAY, c.dashboard, env)
        yield c
    finally:
        if start.poll() is None:
            start.kill()
        for job_driver in child_sessions(start.pid):
            kill_session(job_driver)
        kill_session(start.pid)
        if temp_dir != base:
            shutil.rmtree(temp_dir, ignore_errors=True)


def wait_job(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0 and "succeeded" in out, out
    return out


# checks --------------------------------------------------------------------------------------
def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_dataset(out: pathlib.Path, parts: dict[str, dict[str, int]], shard_rows: int) -> dict:
    """Files, rows, columns, checksums and embedded metadata of a finished build; its manifest."""
    manifest = json.loads((out / "ncagen.json").read_text())
    assert manifest["complete"] is True
    expected = set()
    for name, splits in parts.items():
        for split, rows in splits.items():
            n = -(-rows // shard_rows)
            expected |= {f"data/{name}/{split}-{i:05d}-of-{n:05d}.parquet" for i in range(n)}
    on_disk = {str(p.relative_to(out)) for p in (out / "data").rglob("*") if p.is_file()}
    assert on_disk == expected  # every shard exactly once, no temp files left behind
    assert not list(out.rglob("*.tmp"))
    assert set(manifest["shards"]) == expected
    for rel, entry in manifest["shards"].items():
        path = out / rel
        assert entry["sha256"] == sha256(path), rel
        assert entry["bytes"] == path.stat().st_size
        f = pq.ParquetFile(path)
        table = f.read(columns=["band", "states", "input_ids"])
        name = rel.split("/")[1]
        assert entry["rows"] == f.metadata.num_rows == table.num_rows
        assert set(table.column("band").to_pylist()) == {name}
        assert set(table.column("states").to_pylist()) == {manifest["partitions"][name]["states"]}
        # only deterministic values in the file: a rebuilt shard is byte-identical
        meta = f.metadata.metadata
        assert set(meta) == {b"ARROW:schema", b"ncagen.shard"}
        stats = json.loads(meta[b"ncagen.shard"])
        assert not {"seconds", "time", "timestamp", "host", "pid"} & set(stats), stats
    for name, splits in parts.items():
        got = {s: v["rows"] for s, v in manifest["partitions"][name]["splits"].items()}
        assert got == {s: r for s, r in splits.items() if r}
    return manifest


# tests ---------------------------------------------------------------------------------------
def test_job_builds_two_partitions_like_the_local_executor(cluster, tmp_path):
    out = tmp_path / "ray"
    args = ["--band", "0.5-1.0", "--band", "0.3-0.4", "--rows", "300", "--val-rows", "50",
            "--shard-rows", "150", *SMALL, "--out", str(out)]
    log = wait_job(cluster.submit(args, f"ncagen-{secrets.token_hex(4)}"))
    assert "[ncagen] 6/6 shards  700/700 rows" in log
    assert "band_30_40" in log and "built" in log  # the end-of-build summary
    parts = {name: {"train": 300, "validation": 50} for name in ("band_50_100", "band_30_40")}
    manifest = check_dataset(out, parts, 150)
    assert manifest["command"].startswith("python -m ncagen.build")

    from ncagen.build import main

    local = tmp_path / "local"
    assert main([*args[:-1], str(local), "--executor", "local"]) == 0
    for rel in manifest["shards"]:  # two workers, any finish order: the same bytes as one process
        assert sha256(out / rel) == sha256(local / rel), rel


def _writing_for(out, seconds: float) -> list:
    """Temp files under `out` that have been written for more than `seconds` (one renamed into
    place between the listing and its stat is not being written any more)."""
    now, found = time.time(), []
    for p in (out.rglob("*.tmp") if out.exists() else []):
        try:
            if now - p.stat().st_ctime > seconds:
                found.append(p)
        except FileNotFoundError:
            pass
    return found


def test_worker_killed_mid_shard_is_retried(cluster, tmp_path):
    out = tmp_path / "out"
    # shards of a few seconds each (band 0.3-0.4 tries about 11 candidates a row): long enough
    # to catch one writing, even on workers an earlier test left warm
    args = ["--band", "0.3-0.4", "--rows", "12000", "--shard-rows", "3000", *SMALL, "--out", str(out)]
    job = f"ncagen-{secrets.token_hex(4)}"
    proc = cluster.submit(args, job)
    killed = None
    deadline = time.monotonic() + 180
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        # a worker that has been writing for a while: its task's RUNNING event (with its pid)
        # has reached the GCS, so the failed attempt can be found by pid afterwards
        writing = _writing_for(out, 1.0)
        workers = shard_workers(cluster.sid) if writing else []
        if workers:
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    assert killed is not None, "never saw a worker writing a shard"
    log = wait_job(proc)
    check_dataset(out, {"band_30_40": {"train": 12000}}, 3000)
    assert "[ncagen] 4/4 shards  12,000/12,000 rows" in log
    assert_retried(cluster.cli, cluster.dashboard, killed)
