"""Process helpers for the Ray tests and benchmark: sessions, clean teardown, free ports.

Ray's workers leave the process group of the command that started them but stay in its
session, so a test that starts Ray with start_new_session=True can find, and stop, exactly
what it started: the processes of that session.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import time


def processes() -> dict[int, tuple[int, int]]:
    """{pid: (parent pid, session id)} of every live process."""
    out = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session
        if fields[0] != "Z":
            out[int(entry)] = (int(fields[1]), int(fields[3]))
    return out


def session_pids(sid: int) -> list[int]:
    """Live processes of session `sid`."""
    return [pid for pid, (_, s) in processes().items() if s == sid]


def kill_pids(pids: list[int]) -> None:
    """SIGKILL each pid, ignoring those already gone."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_session(sid: int, grace: float = 5.0) -> None:
    """SIGTERM the process group `sid` leads, then SIGKILL whatever of its session is left."""
    try:
        os.killpg(sid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    for _ in range(50):
        left = session_pids(sid)
        if not left:
            return
        kill_pids(left)
        time.sleep(0.2)
    raise AssertionError(f"processes of session {sid} survived SIGKILL: {session_pids(sid)}")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and that this process has not
    handed out before: a Ray node is given several at once, and the kernel may offer a port it
    just released again (once gcs_server and object_manager got the same one)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def ray_port_flags() -> list[str]:
    """`ray start` flags giving every fixed default port of a node a free one, so that another
    Ray on this machine cannot collide with ours."""
    return [f"--{name}-port={free_port()}" for name in (
        "object-manager", "node-manager", "ray-client-server", "dashboard-agent-listen",
        "dashboard-agent-grpc", "runtime-env-agent", "metrics-export")]


def wait_for_job_agent(ray: list[str], address: str, env: dict, timeout: float = 120) -> None:
    """Until the node's job agent takes jobs: `ray start` returns before it registers. `ray` is
    the command that runs Ray's CLI, `address` the job server's http:// address."""
    deadline = time.monotonic() + timeout
    while True:
        res = subprocess.run([*ray, "job", "submit", "--address", address, "--", "true"],
                             env=env, capture_output=True, text=True, timeout=120)
        out = res.stdout + res.stderr
        if res.returncode == 0:
            return
        assert "No available agent" in out, out
        assert time.monotonic() < deadline, f"the Ray job agent never came up:\n{out}"
        time.sleep(1.0)


def child_sessions(sid: int) -> set[int]:
    """Sessions that processes of session `sid` started (Ray runs each job's driver in one)."""
    procs = processes()
    return {s for pid, (ppid, s) in procs.items() if s != sid and procs.get(ppid, (0, 0))[1] == sid}


def shard_workers(sid: int) -> list[int]:
    """Pids of Ray workers of session `sid` that are running a shard task right now."""
    pids = []
    for pid in session_pids(sid):
        try:
            cmd = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmd.startswith(b"ray::_ray_shard"):
            pids.append(pid)
    return pids


def reap_session(sid: int, wait: float = 30.0) -> list[int]:
    """Wait for session `sid` to die out; SIGKILL and return the pids still alive after `wait`."""
    deadline = time.monotonic() + wait
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = session_pids(sid)
    kill_pids(left)
    return left


def assert_retried(cli, dashboard: str, killed: int) -> list[dict]:
    """Check that Ray saw the shard attempt of worker `killed` fail and ran that shard again;
    returns Ray's records of every shard task attempt. `cli(*args)` runs the `ray` CLI."""
    for _ in range(20):  # task events reach the dashboard asynchronously
        tasks = json.loads(cli("list", "tasks", "--address", dashboard, "--detail", "--format",
                               "json", "--limit", "10000", "--filter",
                               "func_or_class_name=_ray_shard"))
        attempts = [t for t in tasks if t.get("worker_pid") == killed]
        retried = {t["task_id"] for t in tasks if t["attempt_number"] > 0 and t["state"] == "FINISHED"}
        if attempts and {t["task_id"] for t in attempts} <= retried:
            break
        time.sleep(0.5)
    assert attempts and all(t["state"] == "FAILED" for t in attempts), attempts
    assert {t["task_id"] for t in attempts} <= retried
    return tasks
