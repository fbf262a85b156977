"""What each stage of a unit costs a candidate, against the gzip floor, on one thread.

    python benchmarks/bench_stages.py [--band 0.5-1.0 --band 0.3-0.4] [--states 10]
                                      [--batch 4096] [--rounds 5]

Issue 10 asks for a shard phase within 1.5x of the gzip floor (zlib at level 9 on every
candidate the build tries). This splits a unit (`generate._filtered_rows`, the CPU engine) into
its stages, each timed on its own with the functions the build calls, on real candidates of
the band's first shard, one thread, `--rounds` batches after a warm-up one:

  rules + initial grids   sampling each candidate's rule and first grid
  head rollout            burn-in and the grids the gzip ratio is taken of
  gzip (exact, bounded)   the exact size kernel with the band's bounds, as the build runs it
  tail rollout            the rest of each kept row's trajectory
  zstd                    the kept rows' zstd ratios
  framing                 the kept rows' input_ids
  Parquet                 the kept rows encoded as the release writes them (into memory)

and zlib itself on the same candidates (the floor's cost a candidate). It prints each stage
in us per candidate, their sum against the floor (what the shard phase's ratio could be on
these cores with no other cost), and the same without the rollouts and rule sampling, which a
GPU worker takes off the cores: the ratio its cores could reach.
"""

from __future__ import annotations

import argparse
import io
import os
import pathlib
import platform
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from ncagen import complexity  # noqa: E402
from ncagen.config import Band, NCAConfig  # noqa: E402
from ncagen.generate import candidate_seeds, fresh_candidates, rollout_tokens  # noqa: E402
from ncagen.plan import BuildConfig, plan  # noqa: E402
from ncagen.shards import ROW_GROUP_ROWS, schema, to_table  # noqa: E402
from ncagen.tokens import to_sequence_of  # noqa: E402

DEVICE_STAGES = ("rules + initial grids", "head rollout", "tail rollout")


def unit_stages(nca: NCAConfig, band: Band, seeds: np.ndarray, sims: np.ndarray) -> dict:
    """Seconds of each stage for one batch of candidates, one thread, as `_filtered_rows`."""
    t = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        t[name] = time.perf_counter() - t0
        return out

    params, state = timed("rules + initial grids", lambda: fresh_candidates(nca, seeds, sims))
    R, K = nca.ratio_grids, nca.grids_per_sequence
    head, state, params = timed("head rollout", lambda: rollout_tokens(
        nca, seeds, sims, R, threads=1, start=(params, state, 0, 0)))
    ratios = timed("gzip (exact, bounded)", lambda: complexity.gzip_ratios(
        head, nca.gzip_level, workers=1, band=band))
    keep = np.flatnonzero(band.mask(ratios))
    tail, _, _ = timed("tail rollout", lambda: rollout_tokens(
        nca, seeds[keep], sims[keep], K, threads=1,
        start=(params.subset(keep), state[keep], nca.record_time(R - 1), R)))
    zstd = timed("zstd", lambda: complexity.zstd_ratios(head[keep], nca.zstd_level, workers=1))
    ids = timed("framing", lambda: to_sequence_of(head[keep], tail, nca))
    cols = {"input_ids": ids, "gzip_ratio": ratios[keep], "zstd_ratio": zstd,
            "rule_seed": seeds[keep], "sim": sims[keep].astype(np.int32)}

    def encode():
        sink = io.BytesIO()
        with pq.ParquetWriter(sink, schema(nca), compression="zstd") as w:
            w.write_table(to_table(cols, nca, "band"), row_group_size=ROW_GROUP_ROWS)
        return sink.tell()

    timed("Parquet", encode)
    timed("zlib (the floor)", lambda: complexity.zlib_gzip_ratios(head, nca.gzip_level,
                                                                   workers=1))
    t["kept"] = len(keep)
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--band", action="append", help="default 0.5-1.0 and 0.3-0.4")
    ap.add_argument("--states", type=int, default=10)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; one thread, batches of {args.batch:,}", flush=True)
    for text in args.band or ["0.5-1.0", "0.3-0.4"]:
        band = Band.parse(text)
        cfg = BuildConfig(out="/nonexistent", bands=(band,), states=(args.states,), rows=1000,
                          val_rows=0, nca=NCAConfig(states=args.states))
        first = plan(cfg)[0]
        total: dict[str, float] = {}
        for r in range(args.rounds + 1):  # round 0 warms the compiled code up
            seeds, sims = candidate_seeds(first.key, r * args.batch, args.batch,
                                          first.nca.sims_per_rule)
            t = unit_stages(first.nca, band, seeds, sims)
            if r:
                for k, v in t.items():
                    total[k] = total.get(k, 0.0) + v
        n = args.rounds * args.batch
        kept = total.pop("kept")
        floor = total.pop("zlib (the floor)") / n * 1e6
        us = {k: v / n * 1e6 for k, v in total.items()}
        print(f"band {text}, n = {args.states}: {n:,} candidates, {kept / n:.1%} kept")
        for k, v in us.items():
            print(f"  {k:<24} {v:7.2f} us a candidate")
        every = sum(us.values())
        cores = sum(v for k, v in us.items() if k not in DEVICE_STAGES)
        print(f"  {'all stages':<24} {every:7.2f} us; zlib (the floor) {floor:.2f} us")
        print(f"  stages / floor: {every / floor:.2f} on the CPU alone (no other cost); "
              f"{cores / floor:.2f} with the rollouts and rules on a device "
              f"(gzip alone: {us['gzip (exact, bounded)'] / floor:.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
