"""Seeds -> filtered rows for one shard: rule, rollout, tokens, complexity filter. No Ray, no files.

Candidates are numbered 0, 1, 2, ... inside a shard; candidate j is simulation j % S of rule
j // S (S = sims_per_rule), and the rule's seed is a hash of (shard key, j // S). A shard's rows
are its first accepted candidates in candidate order, so they do not depend on the batch size.
Each candidate is rolled out only as far as the gzip ratio needs (its first `ratio_grids`
recorded grids); the rest of the sequence is rolled out for accepted candidates alone.

On a device (a GPU) a unit is a pipeline of two stages on two threads: the device thread does
every rollout (the head rollouts of the candidates, the tail rollouts of the accepted ones, in
the order they are asked for), the unit thread the rest (gzip and zstd ratios on the cores,
the band filter, sequence assembly). While the cores work on unit k the device rolls unit k+1
out; the unit thread hands unit k's tail to the device and computes its zstd ratios meanwhile.
The device thread samples a unit's rules and initial grids on every core first
(`fresh_candidates`): on one core they take about a second per 32,768 candidates, which could
hold the device up. At most PIPELINE_UNITS units of one `generate` call are in flight, and at
the start no more than the shard's rows could fill; a unit still running when the shard has its
rows skips its tail. Each unit's columns are the
same pure function of its candidates on either path, and units are consumed in candidate
order, so rows do not depend on the pipeline.

A shard of a mixture (`generate_parts`) is several such shards, one per component band with
its own key, interleaved row by row in the fixed order `mix_order` gives.
"""

from __future__ import annotations

import collections
import math
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from . import complexity, rng
from .config import Band, NCAConfig
from .rollout import advance, cpu_threads, init_state, noise_keys
from .rules import RuleParams, sample_rules
from .threads import default_workers, pool
from .tokens import encode_grids, to_sequence, to_sequence_of

DEFAULT_BATCH = 1024  # candidates per unit of work on the CPU (a GPU wants far more)
SEARCH_LIMIT = 20_000  # candidates tried without a single accepted row before giving up
LOOKAHEAD = 2  # units queued per CPU thread beyond the ones running
PIPELINE_UNITS = 3  # on a device: one unit on the cores, one on the device, one queued behind it
PREP_CHUNK = 1024  # fewest candidates a thread samples rules and initial grids for
TAIL_UNIT = 64  # fewest candidates of a unit cut to what a shard's last rows need
TAIL_MARGIN = 1.25  # a last unit tries this many times the candidates its rows need, on average
TAIL_SHARE = 2  # near the end a unit takes at most 1 / (TAIL_SHARE * units in flight) of the rest
MIX_CHUNK = 1024  # rows of a mixture shard assembled at a time (rows do not depend on it)


class BandUnreachable(RuntimeError):
    """No random rule's trajectory falls inside the band for this alphabet."""


@dataclass
class ShardStats:
    """What generating a shard cost. Recorded with the shard: `candidates`, those up to and
    including its last row, and `accepted`, its rows (so both depend on the rows alone, not on
    how the candidates were cut into units, nor on the device). Besides: `tried` and `found`,
    every candidate of the units consumed and how many lay in the band, and the ratios seen."""

    candidates: int = 0
    accepted: int = 0
    tried: int = 0
    found: int = 0
    ratio_min: float = float("inf")
    ratio_max: float = float("-inf")

    def add(self, ratios: np.ndarray, found: int) -> None:
        """Count a unit's candidates; its ratios may hold NaN (outside the band, by a bound)."""
        self.tried += len(ratios)
        self.found += found
        seen = ratios[~np.isnan(ratios)]
        if len(seen):
            self.ratio_min = min(self.ratio_min, float(seen.min()))
            self.ratio_max = max(self.ratio_max, float(seen.max()))


def candidate_seeds(shard_key: int, start: int, count: int, sims_per_rule: int):
    """Rule seeds (int64) and simulation indices of candidates start .. start+count-1."""
    j = np.arange(start, start + count, dtype=np.int64)
    rule_index = j // sims_per_rule
    seeds = rng.seed_of(rng.derive_many(np.full(count, shard_key, np.uint64), rule_index))
    return seeds, (j % sims_per_rule).astype(np.int32)


def _params_for(rule_seeds: np.ndarray, cfg: NCAConfig):
    """Rule parameters for each candidate, sampling each distinct rule once."""
    if cfg.sims_per_rule == 1:
        return sample_rules(rule_seeds, cfg)
    uniq, inverse = np.unique(rule_seeds, return_inverse=True)
    return sample_rules(uniq, cfg).subset(inverse)


def fresh_candidates(cfg: NCAConfig, rule_seeds: np.ndarray, sims: np.ndarray, threads: int = 1):
    """(rule parameters, initial grids) of candidates, the batch split over up to `threads`
    threads. A device's unit needs this: its rules alone take a core about a second per 32,768
    candidates, which could hold the device up. Each row is a pure function of its own seeds,
    so the split does not change it."""
    parts = max(1, min(threads, len(rule_seeds) // PREP_CHUNK))
    if parts == 1:
        return _params_for(rule_seeds, cfg), init_state(rule_seeds, sims, cfg)
    cuts = [len(rule_seeds) * k // parts for k in range(parts + 1)]
    done = list(pool(parts, "ncagen-prep").map(
        lambda lo, hi: fresh_candidates(cfg, rule_seeds[lo:hi], sims[lo:hi]), cuts[:-1], cuts[1:]))
    return RuleParams.concat([p for p, _ in done]), np.concatenate([s for _, s in done])


def rollout_tokens(cfg: NCAConfig, rule_seeds: np.ndarray, sims: np.ndarray, grids: int,
                   device: str = "cpu", start=None, threads: int | None = None):
    """Roll candidates out and return (patch tokens (B, grids, P), final state, params).

    With `start=(params, state, t, done)` the rollout continues from a previous call that
    recorded `done` grids and ended at step t. `threads` threads sample the rules (default:
    one) and, on the CPU engine, roll out (default: numba's count).
    """
    B, G = len(rule_seeds), cfg.grid
    if start is None:
        params, state = fresh_candidates(cfg, rule_seeds, sims, threads or 1)
        t0, done = 0, 0
    else:
        params, state, t0, done = start
    out = np.empty((B, grids - done, G, G), np.uint8)
    t1 = cfg.record_time(grids - 1)
    state = advance(params, state, noise_keys(rule_seeds, sims), t0, t1, cfg, out,
                    rec_offset=done, device=device, threads=threads)
    return encode_grids(out, cfg.states, cfg.patch), state, params


def _now(fn, *args, **kwargs) -> Future:
    """Run fn here and now; its result as a finished Future (the CPU engine's `submit`)."""
    future: Future = Future()
    future.set_result(fn(*args, **kwargs))
    return future


def _filtered_rows(cfg: NCAConfig, band: Band, rule_seeds: np.ndarray, sims: np.ndarray,
                   device: str, threads: int | None, submit: Callable[..., Future] = _now,
                   head: Future | None = None, dropped: threading.Event | None = None,
                   exact: bool = True) -> tuple[dict, np.ndarray]:
    """One unit of work: (columns of the candidates whose gzip ratio lies in the band, every
    candidate's ratio). On the CPU it runs on one thread (`threads` = 1) beside other units.
    Unless `exact`, a candidate that a bound puts outside the band gets NaN for its ratio
    (its exact value is skipped, not needed: rows are the same either way).

    Rollouts go through `submit` (on a device: the device thread's queue), so the zstd ratios
    are computed while the tail rolls out; `head`, when given, is the head rollout, already
    submitted. Once `dropped` is set (the shard has all its rows) the unit stops after its
    ratios, with no rows: nobody will read them, and the device has better things to do.
    """
    R, K = cfg.ratio_grids, cfg.grids_per_sequence
    if head is None:
        head = submit(rollout_tokens, cfg, rule_seeds, sims, R, device, threads=threads)
    tokens, state, params = head.result()  # (B, R, P)
    ratios = complexity.gzip_ratios(tokens, cfg.gzip_level, workers=threads,
                                    band=None if exact else band)
    keep = np.flatnonzero(band.mask(ratios))
    if dropped is not None and dropped.is_set():
        keep = keep[:0]
    tokens, seeds, sm = tokens[keep], rule_seeds[keep], sims[keep]
    tail = None
    if len(keep) and K > R:
        tail = submit(rollout_tokens, cfg, seeds, sm, K, device, threads=threads,
                      start=(params.subset(keep), state[keep], cfg.record_time(R - 1), R))
    zstd = complexity.zstd_ratios(tokens, cfg.zstd_level, workers=threads)
    if not len(keep):
        input_ids = np.zeros((0, cfg.seq_len), np.int32)
    elif tail is not None:
        input_ids = to_sequence_of(tokens, tail.result()[0], cfg)
    else:
        input_ids = to_sequence(tokens, cfg)
    return {
        "input_ids": input_ids,
        "gzip_ratio": ratios[keep],
        "zstd_ratio": zstd,
        "rule_seed": seeds,
        "sim": sm.astype(np.int32),
    }, ratios


def _device_unit(cfg: NCAConfig, band: Band, rule_seeds: np.ndarray, sims: np.ndarray,
                 device: str, threads: int | None, dropped: threading.Event, exact: bool) -> Future:
    """Start one unit on a device: its head rollout queues on the device thread at once, the
    rest of it (`_filtered_rows`) on the unit thread, which sends the tail back to the device."""
    rollouts = pool(1, "ncagen-device")
    head = rollouts.submit(rollout_tokens, cfg, rule_seeds, sims, cfg.ratio_grids, device,
                           threads=threads or default_workers())
    unit = pool(1, "ncagen-unit").submit(_filtered_rows, cfg, band, rule_seeds, sims, device,
                                         threads, rollouts.submit, head, dropped, exact)
    unit.add_done_callback(lambda f: f.cancelled() and head.cancel())  # dropped unseen: no rollout
    return unit


def generate(cfg: NCAConfig, band: Band, shard_key: int, rows: int, device: str = "cpu",
             batch: int = DEFAULT_BATCH, stats: ShardStats | None = None,
             threads: int | None = None, width: Callable[[], int] | None = None
             ) -> Iterator[dict]:
    """Yield column batches of a shard's first `rows` accepted candidates, in candidate order.

    The candidates are cut into units of `batch`. On the CPU, `threads` threads (default: one
    per core numba may use) work through the units (each unit on one thread), a few units ahead
    of the caller, so the cores stay busy while the caller handles what it was given (say,
    writes it to Parquet). On a device the units go through the two-stage pipeline of the
    module docstring, PIPELINE_UNITS at most in flight, with the ratios of each spread over
    `threads` cores. `width()`, when given, may raise the CPU thread count as the shard runs
    (cores that other shards left idle); rows never depend on it.
    """
    stats = stats if stats is not None else ShardStats()
    batch = max(1, min(batch, 2 * rows + 64))  # a few rows need no big unit (rows do not depend on it)
    cpu = device == "cpu"
    workers = (threads or cpu_threads()) if cpu else 1  # numba's count is per thread: read it here
    queue: collections.deque = collections.deque()  # (first candidate, count, future) per unit
    dropped = threading.Event()  # set when the caller needs no more units (device path)
    start = done = 0

    def next_unit() -> int:
        """Candidates of the next unit to start, 0 for none yet. The queue is kept `depth`
        units deep (a few per CPU thread; PIPELINE_UNITS on a device) while the shard is far
        from its rows; near the end it stops at about what the missing rows need, at the
        acceptance seen so far, and the last unit is cut to that (its unused candidates would
        be work for nothing)."""
        nonlocal workers
        if cpu and width is not None:
            workers = max(workers, width())
        depth = workers * (1 + LOOKAHEAD) if cpu else PIPELINE_UNITS
        if len(queue) >= depth:
            return 0
        if not stats.tried:  # nothing seen yet: one unit per thread (a device: no more than
            first = workers if cpu else min(depth, math.ceil(rows / batch))  # rows at 100%)
            return batch if len(queue) < first else 0
        rate = max(stats.found / stats.tried, 1e-3)
        queued = sum(n for _, n, _ in queue)
        missing = (rows - done) * TAIL_MARGIN - rate * queued
        if missing <= 0:
            return 0 if queue else TAIL_UNIT
        # within a few units of the end, units shrink to a share of what is left, so the unit
        # the last row falls in (the rest of it is work for nothing) is a small one
        share = math.ceil((rows - done) / rate / (TAIL_SHARE * depth))
        return min(batch, max(TAIL_UNIT, min(math.ceil(missing / rate), share)))

    try:
        while done < rows:
            while (count := next_unit()):
                seeds, sims = candidate_seeds(shard_key, start, count, cfg.sims_per_rule)
                exact = stats.found == 0  # until a row is found, the ratio range may be reported
                if cpu:
                    run = pool(workers, "ncagen-rows")  # a wider pool once width() grows
                    unit = run.submit(_filtered_rows, cfg, band, seeds, sims, device, 1,
                                      exact=exact)
                else:
                    unit = _device_unit(cfg, band, seeds, sims, device, threads, dropped, exact)
                queue.append((start, count, unit))
                start += count
            first, _, unit = queue.popleft()
            cols, ratios = unit.result()
            stats.add(ratios, len(cols["rule_seed"]))
            take = min(rows - done, len(cols["rule_seed"]))
            done += take
            if take:
                stats.candidates = first + int(np.flatnonzero(band.mask(ratios))[take - 1]) + 1
                stats.accepted = done
                yield {k: v[:take] for k, v in cols.items()}
            if stats.found == 0 and stats.tried >= SEARCH_LIMIT:
                raise BandUnreachable(
                    f"band {band} looks unreachable for states={cfg.states}: {stats.tried} "
                    f"random rules gave gzip ratios in [{stats.ratio_min:.3f}, "
                    f"{stats.ratio_max:.3f}], none strictly inside ({band.lo:g}, {band.hi:g})")
    finally:
        dropped.set()  # a device unit already running skips its tail
        for _, _, future in queue:  # the caller stopped early: queued units are dropped,
            future.cancel()         # running ones finish unseen


def mix_order(counts: list[int]) -> np.ndarray:
    """The component of each row of a mixture shard, (sum(counts),) int32 in row order: a smooth
    weighted round-robin over the counts (at each row every component gains its count, the one
    furthest ahead, the earlier on a tie, takes the row and loses the total), so component k
    gets exactly counts[k] rows, spread evenly."""
    total, current, order = sum(counts), [0] * len(counts), []
    for _ in range(total):
        current = [c + n for c, n in zip(current, counts)]
        k = max(range(len(counts)), key=lambda i: (current[i], -i))
        current[k] -= total
        order.append(k)
    return np.asarray(order, np.int32)


class _Rows:
    """Rows taken from a generator of column batches, n at a time."""

    def __init__(self, batches: Iterator[dict]):
        self.batches, self.pending = batches, []

    def take(self, n: int) -> dict:
        have = sum(len(c["rule_seed"]) for c in self.pending)
        while have < n:
            cols = next(self.batches)
            self.pending.append(cols)
            have += len(cols["rule_seed"])
        whole = {k: np.concatenate([c[k] for c in self.pending]) for k in self.pending[0]}
        rest = {k: v[n:] for k, v in whole.items()}
        self.pending = [rest] if len(rest["rule_seed"]) else []
        return {k: v[:n] for k, v in whole.items()}


def generate_parts(cfg: NCAConfig, parts: list[tuple[Band, int, int]], device: str = "cpu",
                   batch: int = DEFAULT_BATCH, stats: ShardStats | None = None,
                   threads: int | None = None, width: Callable[[], int] | None = None
                   ) -> Iterator[dict]:
    """Yield column batches of a shard made of `parts`, (band, key, rows) each: with one part,
    `generate`'s; with several (a mixture), each part's rows are `generate`'s for its band and
    key, interleaved in `mix_order`, and every batch has a "part" column (the part of each row)."""
    if len(parts) == 1:
        band, key, rows = parts[0]
        yield from generate(cfg, band, key, rows, device, batch, stats, threads, width)
        return
    stats = stats if stats is not None else ShardStats()
    own = [ShardStats() for _ in parts]
    sources = [_Rows(generate(cfg, band, key, rows, device, batch, st, threads, width))
               for (band, key, rows), st in zip(parts, own)]
    order = mix_order([rows for _, _, rows in parts])
    try:
        for start in range(0, len(order), MIX_CHUNK):
            which = order[start:start + MIX_CHUNK]
            out: dict = {}
            for k, source in enumerate(sources):
                at = np.flatnonzero(which == k)
                if not len(at):
                    continue
                for name, v in source.take(len(at)).items():
                    if name not in out:
                        out[name] = np.empty((len(which), *v.shape[1:]), v.dtype)
                    out[name][at] = v
            out["part"] = which.copy()
            yield out
    finally:
        for source in sources:
            source.batches.close()
        for st in own:
            stats.candidates += st.candidates
            stats.accepted += st.accepted
            stats.tried += st.tried
            stats.found += st.found
            stats.ratio_min = min(stats.ratio_min, st.ratio_min)
            stats.ratio_max = max(stats.ratio_max, st.ratio_max)


def regenerate(cfg: NCAConfig, rule_seeds, sims, device: str = "cpu") -> dict:
    """Rebuild rows from their recorded seeds, unfiltered (for verification and inspection)."""
    rule_seeds = np.asarray(rule_seeds, np.int64)
    sims = np.asarray(sims, np.int32)
    patches, _, _ = rollout_tokens(cfg, rule_seeds, sims, cfg.grids_per_sequence, device)
    head = patches[:, :cfg.ratio_grids]
    return {
        "input_ids": to_sequence(patches, cfg),
        "gzip_ratio": complexity.gzip_ratios(head, cfg.gzip_level),
        "zstd_ratio": complexity.zstd_ratios(head, cfg.zstd_level),
        "rule_seed": rule_seeds,
        "sim": sims,
    }
