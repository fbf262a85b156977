"""The whole command as a user runs it, this checkout against a previous release, and the floor.

    python benchmarks/bench_command.py --base DIR [--work 0.5-1.0:160000 --work 0.3-0.4:50000]
                                       [--repeat 3] [--states 10]

DIR is a checkout of the previous release (e.g. `git worktree add /tmp/base <rev>`). For each
band, `--repeat` rounds, each running `python -m ncagen.build --band B --states N --rows R` (the
default executor: an embedded private Ray, the card included) once with each checkout first on
PYTHONPATH, in alternating order, timed from process start to exit. Reported per band: medians
of the whole command and of its shard phase (the manifest's build_seconds), this checkout's
speed-up over the base in the same run, the gzip floor (gzip alone, on all cores, for as many
real candidates of the band as the base build tried, measured in this run) and the shard phase
against it, and the factor over the paper's reference code (the issue's measured factor of the
base, times the speed-up; and the recorded tokens/s of the reference code on this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
PAPER_TOKENS_PER_S = {"0.5-1.0": 79_000, "0.3-0.4": 26_000}  # RESULTS.md, "Generation"
BASE_X_PAPER = {"0.5-1.0": 70, "0.3-0.4": 71}  # the base's factor as issue 10 measured it


def run_build(checkout: pathlib.Path, band: str, rows: int, states: int, work: pathlib.Path) -> dict:
    """One whole command with `checkout` first on the path: wall seconds and its manifest."""
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    ray_tmp = pathlib.Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))
    env = {**os.environ, "PYTHONPATH": str(checkout), "RAY_TMPDIR": str(ray_tmp),
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "ncagen.build", "--band", band, "--states",
                          str(states), "--rows", str(rows), "--out", str(out)], env=env,
                         cwd=work, capture_output=True, text=True, start_new_session=True)
    wall = time.perf_counter() - t0
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = json.loads((out / "ncagen.json").read_text())
    part = next(iter(manifest["partitions"].values()))
    shutil.rmtree(out, ignore_errors=True)
    return {"wall": wall, "shards": manifest["build_seconds"], "candidates": part["candidates"],
            "tokens": sum(s["tokens"] for s in part["splits"].values())}


def gzip_floor(band: str, states: int, rows: int, candidates: int, exact_kernel: bool = False
               ) -> float:
    """Wall seconds gzip alone (zlib; or, with exact_kernel, ncagen's exact-size kernel with no
    band bound) takes for `candidates` real candidates of the band's first shard."""
    sys.path.insert(0, str(REPO))
    from ncagen import complexity
    from ncagen.config import Band, NCAConfig
    from ncagen.generate import candidate_seeds, rollout_tokens
    from ncagen.plan import BuildConfig, plan

    cfg = BuildConfig(out="/nonexistent", bands=(Band.parse(band),), states=(states,), rows=rows,
                      val_rows=0, nca=NCAConfig())
    first = plan(cfg)[0]
    seeds, sims = candidate_seeds(first.key, 0, min(candidates, 8192), first.nca.sims_per_rule)
    head, _, _ = rollout_tokens(first.nca, seeds, sims, first.nca.ratio_grids)
    t0 = time.perf_counter()
    ratios = complexity.gzip_ratios if exact_kernel else complexity.zlib_gzip_ratios
    for start in range(0, candidates, len(head)):
        ratios(head[:candidates - start], first.nca.gzip_level)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, type=pathlib.Path)
    ap.add_argument("--work", action="append", help="BAND:ROWS (default 0.5-1.0:160000, 0.3-0.4:50000)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--states", type=int, default=10)
    args = ap.parse_args()
    base, ours = args.base.resolve(), REPO
    work = pathlib.Path(tempfile.mkdtemp(prefix="ncagen-cmd-"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; base {base}", flush=True)
    try:
        for checkout in (base, ours):  # compile both kernel caches first
            run_build(checkout, "0.5-1.0", 50, args.states, work)
        for item in args.work or ["0.5-1.0:160000", "0.3-0.4:50000"]:
            band, rows = item.split(":")
            runs: dict[str, list[dict]] = {"base": [], "ours": []}
            for rep in range(args.repeat):
                order = (("base", base), ("ours", ours))
                for name, checkout in (order if rep % 2 == 0 else order[::-1]):
                    r = run_build(checkout, band, int(rows), args.states, work)
                    runs[name].append(r)
                    print(f"band {band} round {rep + 1} {name:<4}  whole {r['wall']:6.1f} s  "
                          f"shards {r['shards']:6.1f} s  {r['tokens'] / r['wall'] / 1e6:.2f}M tok/s "
                          f"whole  candidates {r['candidates']:,}", flush=True)
            med = {n: {k: statistics.median(r[k] for r in v) for k in ("wall", "shards")}
                   for n, v in runs.items()}
            tokens, cands = runs["ours"][0]["tokens"], runs["base"][0]["candidates"]
            floor = gzip_floor(band, args.states, int(rows), cands)
            kernel_floor = gzip_floor(band, args.states, int(rows), cands, exact_kernel=True)
            speed = med["base"]["wall"] / med["ours"]["wall"]
            rate = tokens / med["ours"]["wall"]
            paper = PAPER_TOKENS_PER_S.get(band)
            print(f"band {band}, {int(rows):,} rows, medians of {args.repeat}: whole command base "
                  f"{med['base']['wall']:.1f} s, ours {med['ours']['wall']:.1f} s ({rate / 1e6:.2f}M "
                  f"tok/s) = {speed:.3f}x the base; shard phase base {med['base']['shards']:.1f} s, "
                  f"ours {med['ours']['shards']:.1f} s; gzip floor {floor:.1f} s for {cands:,} "
                  f"candidates: shard phase / floor = base {med['base']['shards'] / floor:.2f}, ours "
                  f"{med['ours']['shards'] / floor:.2f}; exact-size kernel {kernel_floor:.1f} s "
                  f"({floor / kernel_floor:.2f}x zlib), shard phase / it: ours "
                  f"{med['ours']['shards'] / kernel_floor:.2f}; x paper: "
                  f"{BASE_X_PAPER.get(band, float('nan')) * speed:.0f} (issue's {BASE_X_PAPER.get(band)}x "
                  f"for the base, times the speed-up)"
                  + (f", {rate / paper:.0f} against the recorded {paper:,} tok/s" if paper else ""),
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
