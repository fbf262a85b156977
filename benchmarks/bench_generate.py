"""Single-process generation speed, end to end into Parquet, against the gzip floor.

    python benchmarks/bench_generate.py [--rows 50000] [--band 0.5-1.0 --band 0.3-0.4]
                                        [--states 10] [--batch N] [--repeat 3] [--out DIR]

For each band, runs the real build (`ncagen.build.build`, executor 'local': one process,
the rollout, gzip and zstd on every core) of `--rows` train rows into Parquet, `--repeat`
times, then reports each run and the median:
  into Parquet            rows/s and tokens/s over the build's shard phase (plan, generate,
                          write and checksum the Parquet shard, manifest): the manifest's
                          build_seconds
  whole command           the same over the whole `build()` call, which also renders the
                          dataset card and its figures from the files at the end
  cpu                     user+sys seconds of this process during the build (all threads); on
                          a shared machine, tokens per cpu-second is the steadier figure
  gzip floor              the time gzip alone takes for as many candidates as the build tried
                          (the manifest's count), on real candidates of the same shard, on the
                          same cores: no build of this band can be faster than that
  median                  per band, the median run by tokens/s into Parquet, against the
                          paper's reference code on this machine
  peak RSS                of this process so far, taken right after the build (getrusage: it
                          covers the earlier bands too); it must not grow with --rows
The machine may be shared; the load average before and after each build is printed too.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time

REFERENCE_TOKENS_PER_S = {(0.5, 1.0): 79_000, (0.3, 0.4): 26_000}  # paper's code, this machine
REPO = pathlib.Path(__file__).resolve().parents[1]
FLOOR_SAMPLE = 8192  # real candidates whose bytes are gzipped, cycled up to the build's count


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gzip_floor(nca, key: int, candidates: int) -> tuple[float, float]:
    """(wall, cpu) seconds to gzip `candidates` real candidate byte strings on all cores, as the
    build does."""
    from ncagen import complexity
    from ncagen.generate import candidate_seeds, rollout_tokens

    seeds, sims = candidate_seeds(key, 0, min(candidates, FLOOR_SAMPLE), nca.sims_per_rule)
    head, _, _ = rollout_tokens(nca, seeds, sims, nca.ratio_grids)  # (S, R, P): the shard's first
    c0, t0 = cpu_seconds(), time.perf_counter()
    for start in range(0, candidates, len(head)):  # cycle through the sample, a copy at a time
        complexity.zlib_gzip_ratios(head[:candidates - start], nca.gzip_level)
    return time.perf_counter() - t0, cpu_seconds() - c0


def bench_band(band_text: str, args, out_root: str) -> dict:
    from ncagen.build import build
    from ncagen.plan import BuildConfig, plan
    from ncagen.config import Band, NCAConfig

    band = Band.parse(band_text)
    out = os.path.join(out_root, band.name(args.states))
    shutil.rmtree(out, ignore_errors=True)
    cfg = BuildConfig(out=out, bands=(band,), states=(args.states,), rows=args.rows, val_rows=0,
                      executor="local", device="cpu", batch=args.batch, nca=NCAConfig())
    load0 = os.getloadavg()[0]
    c0, t0 = cpu_seconds(), time.perf_counter()
    manifest = build(cfg, command="bench_generate")
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    load1, rss = os.getloadavg()[0], peak_rss_mib()
    part = next(iter(manifest["partitions"].values()))
    rows, tokens = part["splits"]["train"]["rows"], part["splits"]["train"]["tokens"]
    candidates = part["candidates"]
    first = plan(cfg)[0]
    floor, floor_cpu = gzip_floor(first.nca, first.key, candidates)
    shards = manifest["build_seconds"]
    result = dict(band=band_text, rows=rows, tokens=tokens, candidates=candidates,
                  acceptance=part["acceptance_rate"], wall=wall, shards=shards, cpu=cpu,
                  tokens_s=tokens / shards, whole_s=tokens / wall, tokens_cpu_s=tokens / cpu,
                  floor=floor, floor_cpu=floor_cpu, rss=rss, load=(load0, load1),
                  ref=REFERENCE_TOKENS_PER_S.get((band.lo, band.hi)))
    shutil.rmtree(out, ignore_errors=True)
    return result


def report(r: dict) -> str:
    return "\n".join([
        f"band {r['band']}: {r['rows']:,} rows, {r['tokens']:,} tokens, {r['candidates']:,} "
        f"candidates (acceptance {r['acceptance']:.1%})",
        f"  into Parquet   {r['shards']:.1f} s  ->  {r['rows'] / r['shards']:,.0f} rows/s, "
        f"{r['tokens_s'] / 1e6:.3f}M tokens/s",
        f"  whole command  {r['wall']:.1f} s (card {r['wall'] - r['shards']:.1f} s)  ->  "
        f"{r['whole_s'] / 1e6:.3f}M tokens/s;  {r['cpu']:.1f} s cpu, "
        f"{r['tokens_cpu_s'] / 1e6:.3f}M tokens per cpu-second",
        f"  gzip floor     {r['floor']:.1f} s wall, {r['floor_cpu']:.1f} s cpu for the "
        f"{r['candidates']:,} candidates  ->  shards / floor = {r['shards'] / r['floor']:.2f} "
        f"wall; cpu / floor cpu = {r['cpu'] / r['floor_cpu']:.2f}",
        f"  peak RSS       {r['rss']:.0f} MiB   load average {r['load'][0]:.2f} -> "
        f"{r['load'][1]:.2f}",
    ])


def summarise(runs: list[dict]) -> str:
    """The median run of a band (by tokens/s into Parquet) and the spread."""
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    rates = sorted(r["tokens_s"] / 1e6 for r in runs)
    ref = runs[0]["ref"]
    vs = f", {med('tokens_s') / ref:.1f}x the paper's reference ({ref:,} tok/s)" if ref else ""
    return (f"band {runs[0]['band']} median of {len(runs)}: {med('tokens_s') / 1e6:.3f}M tokens/s "
            f"into Parquet (runs {', '.join(f'{x:.3f}' for x in rates)}), "
            f"{med('whole_s') / 1e6:.3f}M with the card, shards / gzip floor "
            f"{med('shards') / med('floor'):.2f}{vs}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=50_000, help="train rows per band (default 50000)")
    ap.add_argument("--band", action="append", help="bands to build (default 0.5-1.0 and 0.3-0.4)")
    ap.add_argument("--states", type=int, default=10)
    ap.add_argument("--batch", type=int, default=None,
                    help="candidates per unit of work (default: the build's)")
    ap.add_argument("--repeat", type=int, default=3, help="builds per band (default 3)")
    ap.add_argument("--out", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import numba

    out_root = args.out or tempfile.mkdtemp(prefix="ncagen-bench-")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, numba {numba.__version__}", flush=True)
    _warm(args.states)
    try:
        summaries = []
        for band in args.band or ["0.5-1.0", "0.3-0.4"]:
            runs = []
            for _ in range(args.repeat):
                runs.append(bench_band(band, args, out_root))
                print(report(runs[-1]), flush=True)
            summaries.append(summarise(runs))
        print("\n".join(summaries))
    finally:
        if args.out is None:
            shutil.rmtree(out_root, ignore_errors=True)
    return 0


def _warm(states: int) -> None:
    """Load the compiled kernels and the one-off imports of a build (pyarrow's pandas bridge,
    matplotlib for the card's figures) first, so that the first band does not pay for them."""
    import importlib

    from ncagen.config import NCAConfig
    from ncagen.generate import candidate_seeds, regenerate

    nca = NCAConfig(states=states)
    seeds, sims = candidate_seeds(0, 0, 4, nca.sims_per_rule)
    regenerate(nca, seeds, sims)
    for name in ("pandas", "matplotlib.pyplot"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


if __name__ == "__main__":
    sys.exit(main())
