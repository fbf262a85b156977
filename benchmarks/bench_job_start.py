"""A small `ray job submit --working-dir` build on a fresh cluster: this checkout against another.

    python benchmarks/bench_job_start.py --base <checkout of an earlier ncagen> [--repeat 3]

Ray unpacks a job's working dir to a new folder on every cluster (and every node). Each round
starts a fresh one-node cluster (`ray start --head` with the job server, 127.0.0.1, its own
temp dir, ports and auth token), submits the README's job, a 200-row band 0.5-1.0 build with
the checkout as working dir, times it from submission to the job's end, and tears the cluster
down by killing the processes of the session it started. One unmeasured round per checkout
first fills what that checkout can keep between clusters (the generated kernel, and since
0.3.4 all compiled code); then the measured rounds alternate base and ours. Medians of each
and their ratio are printed.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
RAY = [sys.executable, "-m", "ray.scripts.scripts"]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
from procs import child_sessions, free_port, kill_session, wait_for_job_agent  # noqa: E402

import bench_ray  # noqa: E402  (its one-node cluster)

BUILD = ["python", "-m", "ncagen.build", "--band", "0.5-1.0", "--rows", "200", "--seq-len", "380"]


def start_cluster(env: dict, temp_dir: pathlib.Path, dash: int) -> int:
    """A fresh head with the job server; returns its session id once it takes jobs."""
    _, sid = bench_ray.start_cluster(env, temp_dir, len(os.sched_getaffinity(0)), dashboard=dash)
    try:
        wait_for_job_agent(RAY, f"http://127.0.0.1:{dash}", env)
    except AssertionError:
        kill_session(sid)
        raise
    return sid


def one_job(checkout: pathlib.Path, env: dict, tmp: pathlib.Path, name: str) -> dict:
    """Start a cluster, submit the build with `checkout` as working dir, tear it down."""
    dash = free_port()
    sid = start_cluster(env, tmp / f"ray-{name}", dash)
    out = tmp / f"out-{name}"
    try:
        t0 = time.perf_counter()
        res = subprocess.run([*RAY, "job", "submit", "--address", f"http://127.0.0.1:{dash}",
                              "--working-dir", str(checkout), "--", *BUILD, "--out", str(out)],
                             env=env, capture_output=True, text=True, timeout=900)
        seconds = time.perf_counter() - t0
    finally:
        for driver in child_sessions(sid):
            kill_session(driver)
        kill_session(sid)
        shutil.rmtree(tmp / f"ray-{name}", ignore_errors=True)
    log = res.stdout + res.stderr
    if res.returncode != 0 or "succeeded" not in log:
        raise RuntimeError(f"the job failed ({res.returncode}):\n{log}")
    built = re.search(r"built \S+ in ([0-9.]+)s", log)
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "shard_phase": float(built.group(1)) if built else float("nan")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, type=pathlib.Path, help="a checkout of an earlier ncagen")
    p.add_argument("--repeat", type=int, default=3, help="measured rounds (at least 1)")
    a = p.parse_args()
    if a.repeat < 1:
        p.error("--repeat must be at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still tear the cluster down
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="nbj", dir="/tmp"))  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONPATH"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
               RAY_USAGE_STATS_ENABLED="0")
    checkouts = {"base": a.base.resolve(), "ours": REPO}
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
          f"Python {platform.python_version()}; base {checkouts['base']}", flush=True)
    runs: dict[str, list[dict]] = {"base": [], "ours": []}
    try:
        for name, checkout in checkouts.items():
            r = one_job(checkout, env, tmp, f"warm-{name}")
            print(f"warm-up {name}: {r['seconds']:6.1f} s", flush=True)
        for rep in range(a.repeat):
            for name in (("base", "ours") if rep % 2 == 0 else ("ours", "base")):
                r = one_job(checkouts[name], env, tmp, f"{name}{rep}")
                runs[name].append(r)
                print(f"round {rep} {name}: job {r['seconds']:6.1f} s  (the build's own clock "
                      f"{r['shard_phase']:.1f} s)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    print(f"medians of {a.repeat}: base {med['base']:.1f} s, ours {med['ours']:.1f} s, "
          f"base / ours = {med['base'] / med['ours']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
