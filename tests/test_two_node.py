"""The Ray build on a cluster of two nodes: a local --out refused, and GPU shard tasks that
size their threads on the node they land on and survive a worker killed mid-shard.

A real two-node Ray cluster on this machine stands in for a multi-node GPU cluster (the second
node declares a GPU resource). The head has 1 CPU and no GPU; the second node has 2 CPUs and
1 GPU, so every GPU task lands there and sizes its threads as 2 CPUs // 1 GPU. Without CUDA on
this machine the tasks fall back to the CPU engine; the rows are the same either way.

Each `ray start` runs in a session of its own, with its own ports, on one temp dir and one
auth token; teardown kills those sessions' processes (and any driver sessions they started),
never anything else.
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

import pytest
from procs import assert_retried, child_sessions, free_port, kill_session, shard_workers

pytest.importorskip("ray")

RAY = [sys.executable, "-m", "ray.scripts.scripts"]
BUILD = [sys.executable, "-m", "ncagen.build"]
NODE_PORTS = ("object-manager", "node-manager", "dashboard-agent-listen", "dashboard-agent-grpc",
              "runtime-env-agent", "metrics-export")




# the cluster ---------------------------------------------------------------------------------
class Cluster:
    """Two local Ray nodes: the head's address, both sessions, the environment to talk to them."""

    def __init__(self, address: str, dashboard: str, env: dict):
        self.address, self.dashboard, self.env = address, dashboard, env
        self.sessions: list[int] = []  # head first
        self.gpu_node = ""  # node id (hex) of the second node

    @property
    def gpu_sid(self) -> int:
        return self.sessions[1]

    def start_node(self, *args: str) -> None:
        """`ray start ...` in a new session of its own; returns when the command did."""
        ports = [f"--{name}-port={free_port()}" for name in NODE_PORTS]
        start = subprocess.Popen(
            [*RAY, "start", "--node-ip-address=127.0.0.1", "--object-store-memory=100000000",
             # random worker ports: two raylets on one machine would otherwise both hand out
             # the default range from its bottom
             "--min-worker-port=0", "--max-worker-port=0", "--disable-usage-stats", *ports, *args],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        self.sessions.append(start.pid)
        try:
            log, _ = start.communicate(timeout=180)
        finally:
            if start.poll() is None:
                start.kill()
        assert start.returncode == 0, log

    def alive_nodes(self) -> list[dict]:
        """`ray list nodes` of the ALIVE nodes (the state API answers once the dashboard is up)."""
        res = subprocess.run([*RAY, "list", "nodes", "--address", self.dashboard, "--format", "json",
                              "--detail"], env=self.env, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            return []
        return [n for n in json.loads(res.stdout) if n.get("state") == "ALIVE"]

    def cli(self, *args: str) -> str:
        return subprocess.run([*RAY, *args], env=self.env, capture_output=True, text=True,
                              check=True, timeout=120).stdout

    def build(self, args: list[str]) -> subprocess.Popen:
        """The build's driver as a plain process that joins the cluster with --address."""
        return subprocess.Popen([*BUILD, *args, "--address", self.address], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    def teardown(self) -> None:
        for sid in reversed(self.sessions):  # the second node first, then the head
            for driver in child_sessions(sid):
                kill_session(driver)
            kill_session(sid)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("ray")
    # Ray's unix sockets live under the temp dir and their paths must stay under ~107 bytes
    temp_dir = base if len(str(base)) <= 40 else pathlib.Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    port, dash = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    c = Cluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", env)
    try:
        c.start_node("--head", f"--port={port}", "--dashboard-host=127.0.0.1",
                     f"--dashboard-port={dash}", "--include-dashboard=true",
                     f"--ray-client-server-port={free_port()}", "--num-cpus=1", "--num-gpus=0",
                     f"--temp-dir={temp_dir}")
        c.start_node(f"--address={c.address}", "--num-cpus=2", "--num-gpus=1",
                     f"--temp-dir={temp_dir}")
        deadline = time.monotonic() + 120
        while len(nodes := c.alive_nodes()) < 2:
            assert time.monotonic() < deadline, f"the second node never came up: {nodes}"
            time.sleep(1.0)
        assert len(nodes) == 2, nodes
        gpu = [n for n in nodes if n["resources_total"].get("GPU", 0) == 1]
        assert len(gpu) == 1 and gpu[0]["resources_total"]["CPU"] == 2 and not gpu[0]["is_head_node"]
        c.gpu_node = gpu[0]["node_id"]
        yield c
    finally:
        c.teardown()
        if temp_dir != base:
            shutil.rmtree(temp_dir, ignore_errors=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    """Wait for a driver; (exit status, stdout, stderr). Its session is killed in any case."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_session(proc.pid)
    return proc.returncode, out, err


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# tests ---------------------------------------------------------------------------------------
def test_local_out_refused_on_two_nodes(cluster, tmp_path):
    out = tmp_path / "out"
    rc, stdout, stderr = finish(cluster.build(["--rows", "100", "--seq-len", "380", "--out", str(out)]))
    assert rc == 2, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    assert "s3://" in lines[0] and "--shared-fs" in lines[0]
    assert not out.exists()


def test_gpu_tasks_size_threads_from_their_node_and_survive_a_worker_kill(cluster, tmp_path):
    out = tmp_path / "out"
    args = ["--rows", "800", "--shard-rows", "200", "--seq-len", "380", "--device", "auto"]
    proc = cluster.build([*args, "--shared-fs", "--out", str(out)])
    killed = None
    try:
        deadline = time.monotonic() + 150
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            writing = list((out / "data").rglob("*.tmp")) if (out / "data").exists() else []
            workers = shard_workers(cluster.gpu_sid) if writing else []
            if workers:
                killed = workers[0]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.02)
    finally:
        rc, stdout, stderr = finish(proc)
    assert killed is not None, "never saw a worker of the second node writing a shard\n" + stderr
    assert rc == 0, stdout + stderr

    manifest = json.loads((out / "ncagen.json").read_text())
    assert manifest["complete"] is True
    expected = {f"data/band_50_100/train-{i:05d}-of-00004.parquet" for i in range(4)}
    assert set(manifest["shards"]) == expected
    for rel, entry in manifest["shards"].items():
        assert entry["node"] == cluster.gpu_node, (rel, entry)
        assert entry["threads"] == 2, (rel, entry)  # the second node's 2 CPUs // 1 GPU
        assert entry["device"] in ("cpu", "cuda"), (rel, entry)

    local = tmp_path / "local"
    res = subprocess.run([*BUILD, *args, "--executor", "local", "--out", str(local)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    for rel in expected:
        assert sha256(out / rel) == sha256(local / rel), rel

    tasks = assert_retried(cluster.cli, cluster.dashboard, killed)
    assert all(t["node_id"] == cluster.gpu_node for t in tasks), tasks

    # nothing but the shards: the killed attempt's temp file is gone too
    on_disk = {str(p.relative_to(out)) for p in (out / "data").rglob("*") if p.is_file()}
    assert on_disk == expected, sorted(on_disk - expected)
