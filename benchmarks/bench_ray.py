"""Ray build vs single-process build on the same work, worker scaling, and peak memory.

    python benchmarks/bench_ray.py [--rows 60000] [--shard-rows 5000] [--mem-tokens 4M,16M]

Starts a private local Ray cluster (127.0.0.1, all cores, its own temp dir, ports and auth
token), then times `python -m ncagen.build` end to end (process start to exit) for:
  local     --executor local: one process, numba and gzip on every core
  ray x1    --address <cluster> --workers 1: one shard task at a time, given every core
  ray xN    --address <cluster>: one single-core shard task per core
  embedded  no --address: the same build starting (and stopping) its own Ray
Then peak memory (RSS of the driver and of each Ray worker, sampled every 0.2 s) for two
--tokens sizes, to show it depends on the shard size, not on the size of the build.
The cluster is torn down by killing exactly the processes of the session it was started in.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
RAY = [sys.executable, "-m", "ray.scripts.scripts"]
sys.path.insert(0, str(REPO / "tests"))
from procs import free_port, kill_session, ray_port_flags, session_pids  # noqa: E402


def rss_mib(pid: int) -> float:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cmdline(pid: int) -> bytes:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class MemorySampler(threading.Thread):
    """Peak RSS of a driver process and of the Ray workers (in `sids`) while it runs."""

    def __init__(self, driver: int, sids: list[int]):
        super().__init__(daemon=True)
        self.driver, self.sids = driver, sids
        self.peak_driver = self.peak_worker = self.peak_workers_total = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak_driver = max(self.peak_driver, rss_mib(self.driver))
            workers = [p for sid in self.sids for p in session_pids(sid)
                       if cmdline(p).startswith((b"ray::run_shard", b"ray::IDLE"))]
            sizes = [rss_mib(p) for p in workers]
            self.peak_worker = max([self.peak_worker, *sizes])
            self.peak_workers_total = max(self.peak_workers_total, sum(sizes))
            time.sleep(0.2)


def run_build(args: list[str], env: dict, sample_sids: list[int] | None = None) -> dict:
    """Run `python -m ncagen.build` in its own session; wall time, exit status, memory peaks."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ncagen.build", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    sampler = None
    if sample_sids is not None:
        sampler = MemorySampler(proc.pid, [*sample_sids, proc.pid])
        sampler.start()
    try:
        log, _ = proc.communicate()
    finally:
        kill_session(proc.pid)  # an embedded Ray's processes, if any outlived the driver
        if sampler:
            sampler.stop.set()
            sampler.join()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"build failed ({proc.returncode}):\n{log}")
    out = {"seconds": seconds}
    if sampler:
        out.update(driver_mib=sampler.peak_driver, worker_mib=sampler.peak_worker,
                   workers_total_mib=sampler.peak_workers_total)
    return out


def start_cluster(env: dict, temp_dir: pathlib.Path, cpus: int,
                  dashboard: int | None = None) -> tuple[str, int]:
    """A one-node cluster on 127.0.0.1 (with the job server on port `dashboard` if given);
    returns its address and the session id of its processes."""
    port = free_port()
    ports = ray_port_flags()
    dash = (["--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}"] if dashboard
            else ["--include-dashboard=false"])
    start = subprocess.Popen(
        [*RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         *dash, f"--num-cpus={cpus}", "--num-gpus=0",
         "--object-store-memory=200000000", *ports, f"--temp-dir={temp_dir}",
         "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    log, _ = start.communicate(timeout=300)
    if start.returncode != 0:
        kill_session(start.pid)
        raise RuntimeError(f"ray start failed:\n{log}")
    return f"127.0.0.1:{port}", start.pid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="60000")
    p.add_argument("--shard-rows", default="5000")
    p.add_argument("--seq-len", default="1024")
    p.add_argument("--band", default="0.5-1.0")
    p.add_argument("--mem-tokens", default="4M,16M", help="two --tokens sizes for the memory runs")
    p.add_argument("--mem-shard-rows", default="1000")
    p.add_argument("--repeat", type=int, default=1, help="interleaved rounds; medians are reported")
    p.add_argument("--no-embedded", action="store_true", help="skip the embedded-Ray run")
    p.add_argument("--json", help="also write the figures here")
    a = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still tear the cluster down

    cpus = len(os.sched_getaffinity(0))
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="nbr", dir="/tmp"))  # short: Ray's socket paths
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(tmp / "embedded"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    (tmp / "embedded").mkdir()
    work = ["--band", a.band, "--rows", a.rows, "--shard-rows", a.shard_rows, "--seq-len", a.seq_len]
    tokens = int(a.rows) * int(a.seq_len)
    results: dict = {"machine": f"{platform.machine()}, {cpus} cores, {platform.python_version()}",
                     "work": " ".join(work), "tokens": tokens}
    sid = None
    try:
        address, sid = start_cluster(env, tmp / "cluster", cpus)

        def timed(name: str, extra: list[str], rep: int) -> None:
            out = tmp / f"{name}{rep}"
            r = run_build([*work, "--out", str(out), *extra], env)
            shutil.rmtree(out)
            runs = results.setdefault(name, {"seconds_each": []})["seconds_each"]
            runs.append(round(r["seconds"], 2))
            results[name]["seconds"] = statistics.median(runs)
            results[name]["tok_per_s"] = tokens / results[name]["seconds"]
            rate = tokens / r["seconds"] / 1e3
            print(f"{name:<10} {r['seconds']:7.1f} s  {rate:8.1f}K tok/s", flush=True)

        # warm-up: compile/load the numba kernel in this checkout, start the cluster's workers
        run_build(["--rows", "200", "--shard-rows", "100", "--seq-len", a.seq_len, "--out",
                   str(tmp / "warm"), "--address", address], env)
        # interleaved repeats, median of each: other load on the machine hits every variant alike
        for rep in range(a.repeat):
            timed("local", ["--executor", "local"], rep)
            timed(f"ray_x{cpus}", ["--address", address], rep)
            timed("ray_x1", ["--address", address, "--workers", "1"], rep)
            if not a.no_embedded:
                timed("embedded", [], rep)
        medians = [f"{k} {v['tok_per_s'] / 1e3:.1f}K" for k, v in results.items() if isinstance(v, dict)]
        print(f"medians of {a.repeat} (tok/s): " + ", ".join(medians), flush=True)
        ray_n = results[f"ray_x{cpus}"]["tok_per_s"]
        results["ray_vs_local"] = ray_n / results["local"]["tok_per_s"]
        results["ray_xN_vs_x1"] = ray_n / results["ray_x1"]["tok_per_s"]
        print(f"ray x{cpus} / local = {results['ray_vs_local']:.3f}   "
              f"ray x{cpus} / ray x1 = {results['ray_xN_vs_x1']:.3f}", flush=True)

        for size in a.mem_tokens.split(","):
            r = run_build(["--band", a.band, "--tokens", size, "--shard-rows", a.mem_shard_rows,
                           "--seq-len", a.seq_len, "--out", str(tmp / f"mem{size}"),
                           "--address", address], env, sample_sids=[sid])
            results[f"memory_{size}"] = r
            print(f"--tokens {size:<5} {r['seconds']:6.1f} s  peak RSS: driver {r['driver_mib']:.0f} "
                  f"MiB, largest worker {r['worker_mib']:.0f} MiB, "
                  f"all workers {r['workers_total_mib']:.0f} MiB", flush=True)
    finally:
        if sid is not None:
            kill_session(sid)
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
