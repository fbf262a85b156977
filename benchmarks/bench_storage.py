"""Object-storage output vs local disk: the same build, timed into a local directory and into
`s3://` on a real S3-compatible server (moto in server mode on 127.0.0.1, tests/s3_server.py).

    python benchmarks/bench_storage.py [--rows 20000] [--shard-rows 5000] [--repeat 3]

Each round runs `python -m ncagen.build --executor local` (one process, every core) twice, once
per target, in alternating order; the figures are medians over the rounds, and the ratio is the
S3 build's tokens/s against the local one's in the same run. The server shares this machine's
cores with the build, so the ratio is an upper bound on what a remote store costs.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from s3_server import S3Server  # noqa: E402  (shared with the tests)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "ncagen.build", *args], env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="20000")
    p.add_argument("--shard-rows", default="5000")
    p.add_argument("--band", default="0.5-1.0")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="ncagen-bench-"))
    server = S3Server(work).start()
    try:
        env = {**server.apply(), "PYTHONPATH": str(REPO)}
        bucket = server.make_bucket("bench")
        base = ["--band", a.band, "--rows", a.rows, "--shard-rows", a.shard_rows,
                "--executor", "local"]
        tokens = int(float(a.rows)) * 1024
        timed([*base, "--rows", "50", "--out", str(work / "warm")], env)  # kernel cache warm
        runs: dict[str, list[float]] = {"local": [], "s3": []}
        server_cpu: list[float] = []
        for rep in range(a.repeat):
            order = ("local", "s3") if rep % 2 == 0 else ("s3", "local")
            for target in order:
                out = str(work / f"local{rep}") if target == "local" else f"{bucket}/r{rep}"
                cpu0 = cpu_seconds(server.proc.pid)
                runs[target].append(timed([*base, "--out", out], env))
                extra = ""
                if target == "s3":
                    server_cpu.append(cpu_seconds(server.proc.pid) - cpu0)
                    extra = f"  (the S3 server used {server_cpu[-1]:.2f} CPU-s of these cores)"
                print(f"round {rep + 1} {target:<5} {runs[target][-1]:6.2f} s  "
                      f"{tokens / runs[target][-1] / 1e6:5.2f}M tok/s{extra}", flush=True)
                if target == "local":
                    shutil.rmtree(out)
        med = {k: statistics.median(v) for k, v in runs.items()}
        print(f"medians of {a.repeat}: local {med['local']:.2f} s ({tokens / med['local'] / 1e6:.2f}M "
              f"tok/s), s3 {med['s3']:.2f} s ({tokens / med['s3'] / 1e6:.2f}M tok/s); "
              f"s3 / local tokens/s = {med['local'] / med['s3']:.3f} "
              f"(cost {100 * (med['s3'] / med['local'] - 1):.1f}%); the S3 server itself used a "
              f"median {statistics.median(server_cpu):.2f} CPU-s per build")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
