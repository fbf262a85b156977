"""The README's "try the same commands on one machine" flow, run as written.

Ray >= 2.60 turns token authentication on in `ray start` as soon as ~/.ray/auth_token exists,
and a `ray job submit` whose shell lacks RAY_AUTH_MODE=token then sends no token and is refused
("Authentication required: Unauthorized: Missing authentication token"). Left alone, a first
`ray.init()` that starts a private Ray writes that file, so a user's first
`python -m ncagen.build` would set the trap; ncagen's private Ray uses a token of its own in
the environment instead and writes none (checked below). Any other Ray use may still leave a
token, so the README exports RAY_AUTH_MODE=token and makes sure a token exists: the commands
then work in a home with a token and in one without.

What stands in for what: a real local Ray cluster (`ray start --head` on 127.0.0.1, 2 CPUs)
stands in for the remote cluster of `ray up`; a private HOME stands in for the user's home
(~/.ray/auth_token and all; only ncagen's cache folder of compiled code is this machine's), with
a build already run in it; the job is sent over HTTP with the real `ray job submit` CLI, like
the one behind `ray dashboard`. One flow covers both homes the README promises: the earlier
build must leave no `~/.ray` at all (checked), so from there on the home is, for Ray, a fresh
one, and the token command runs a second time over the token the first one made.

Every Ray here is started in a new session with its own temp dir and free ports, and torn down
by killing that session's processes (and the job driver's session it started), nothing else.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest
from procs import (child_sessions, free_port, kill_session, ray_port_flags, session_pids,
                   wait_for_job_agent)

from ncagen.jit import cache_dir

pytest.importorskip("ray")

REPO = pathlib.Path(__file__).resolve().parents[1]

# The README block, line for line, except as marked: these exports hold in the user's shell for
# every command after them.
EXPORTS = "export RAY_AUTH_MODE=token"
GENERATE = "ray get-auth-token --generate > /dev/null"
START = "ray start --head --dashboard-host=127.0.0.1 --dashboard-port={dash}"
SUBMIT = ("ray job submit --address http://127.0.0.1:{dash} --working-dir . -- "
          "python -m ncagen.build --band 0.5-1.0 --rows 200 --seq-len 380 --out {out}")


def isolation_flags(temp_dir: str) -> str:
    """Flags the README leaves out: a private temp dir, 2 CPUs, loopback and free ports."""
    ports = " ".join(ray_port_flags())
    return (f" --port={free_port()} --node-ip-address=127.0.0.1 --num-cpus=2 --num-gpus=0"
            f" --object-store-memory=200000000 --temp-dir={temp_dir} --disable-usage-stats {ports}")


def kill_tree(sid: int) -> None:
    """Kill session `sid` and the job-driver sessions it started."""
    for driver in child_sessions(sid):
        kill_session(driver)
    kill_session(sid)


class Shell:
    """The user's terminal: one private HOME, the README's exports before every command."""

    def __init__(self, home: pathlib.Path):
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        bindir = os.path.dirname(sys.executable)  # `ray` and `python` of this interpreter
        # numba's compiled code from this machine's cache folder, not the private home's: the
        # flow is under test here, not how long a first compile takes
        self.env = {**env, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0",
                    "NCAGEN_CACHE_DIR": str(cache_dir()),
                    "PATH": f"{bindir}{os.pathsep}{env.get('PATH', '')}"}

    def popen(self, command: str, exports: bool = True, **kw) -> subprocess.Popen:
        script = f"{EXPORTS}\n{command}" if exports else command
        return subprocess.Popen(["bash", "-ec", script], cwd=REPO, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)

    def run(self, command: str, exports: bool = True, timeout: float = 300) -> tuple[int, str]:
        proc = self.popen(command, exports, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        finally:  # a job driver or a private Ray it started must not outlive the test
            kill_tree(proc.pid)
        return proc.returncode, out


def test_readme_one_machine_flow(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shell = Shell(home)
    # Ray's unix sockets live under the temp dir and their paths must stay under ~107 bytes
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    try:
        # the user's earlier build: its private Ray saves no token, nor anything else of Ray's,
        # in the home (RAY_TMPDIR only keeps that Ray's session files out of the shared /tmp/ray)
        rc, out = shell.run(f"RAY_TMPDIR={temp_dir} python -m ncagen.build --rows 20 "
                            f"--seq-len 380 --out {tmp_path / 'earlier'}", exports=False)
        assert rc == 0, out
        assert not (home / ".ray").exists()

        rc, out = shell.run(GENERATE)  # a home without a token: it makes one
        assert rc == 0, out
        token = (home / ".ray" / "auth_token").read_text()
        assert token.strip()
        rc, out = shell.run(GENERATE)  # a home with one: it keeps it
        assert rc == 0, out
        assert (home / ".ray" / "auth_token").read_text() == token

        dash = free_port()
        start = shell.popen(START.format(dash=dash) + isolation_flags(temp_dir),
                            start_new_session=True)
        try:
            log, _ = start.communicate(timeout=180)
            assert start.returncode == 0, log
            # not a README line: the job agent registers after `ray start` returns
            wait_for_job_agent(["ray"], f"http://127.0.0.1:{dash}",
                               {**shell.env, "RAY_AUTH_MODE": "token"})
            # the trap the exports avoid: without them the job server refuses the submission
            rc, out = shell.run(f"ray job submit --address http://127.0.0.1:{dash} -- true",
                                exports=False, timeout=120)
            assert rc != 0 and "Missing authentication token" in out, out

            out_dir = tmp_path / "nca"  # an absolute --out
            rc, log = shell.run(SUBMIT.format(dash=dash, out=out_dir), timeout=600)
            assert rc == 0 and "succeeded" in log, log
            assert "[ncagen] 1/1 shards  200/200 rows" in log, log
        finally:
            # instead of the README's `ray stop`, which stops every Ray of this user on the
            # machine: kill only the session this test started (and the job drivers it spawned)
            if start.poll() is None:
                start.kill()
            kill_tree(start.pid)
        assert not session_pids(start.pid)

        manifest = json.loads((out_dir / "ncagen.json").read_text())
        assert manifest["complete"] is True
        assert manifest["partitions"]["band_50_100"]["splits"]["train"]["rows"] == 200
        assert len(list((out_dir / "data" / "band_50_100").glob("train-*.parquet"))) == 1
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
