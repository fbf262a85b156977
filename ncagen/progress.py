"""Progress of a build as work happens: rows, tokens/s and ETA, fed by the workers.

Workers report the rows each shard has made so far (a running count per shard, so a retried
shard starts again from zero instead of counting twice); finished shards report their result.
On a terminal the line is redrawn in place as a bar; elsewhere (`ray job logs`, a file) plain
lines are printed every few seconds (NCAGEN_PROGRESS_SECONDS sets the interval).
"""

from __future__ import annotations

import sys
import threading
import time

BAR = 24


def tok_rate(per_second: float) -> str:
    return f"{per_second / 1e6:.2f}M tok/s" if per_second >= 1e6 else f"{per_second / 1e3:.1f}K tok/s"


def hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def interval_from_env() -> float | None:
    """NCAGEN_PROGRESS_SECONDS, the seconds between two progress lines (None when unset; 0: a
    line on every update); ValueError naming it when it is not a number >= 0."""
    from .cli import seconds_from_env

    return seconds_from_env("NCAGEN_PROGRESS_SECONDS", None, zero_ok=True)


class Progress:
    """Shards done, rows, tokens/s and ETA on `stream`, at most every `every` seconds."""

    def __init__(self, total_rows: int, total_shards: int, seq_len: int, *, stream=None,
                 every: float | None = None, live: bool | None = None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        if every is None:  # NCAGEN_PROGRESS_SECONDS overrides the default interval
            every = interval_from_env()
            every = (0.5 if self.live else 3.0) if every is None else every
        self.every = every
        self.total_rows, self.total_shards, self.seq_len = total_rows, total_shards, seq_len
        self.done_rows = self.new_rows = self.shards = 0
        self.partial: dict[str, int] = {}  # shard path -> rows made so far (running shards)
        self.t0 = self.last = time.perf_counter()
        self.lock = threading.Lock()  # shards may finish on another thread (uploads)

    def running(self, path: str, rows: int) -> None:
        """A worker's running count of the rows of one unfinished shard."""
        with self.lock:
            self.partial[path] = rows
            self.tick()

    def finished(self, path: str, rows: int, reused: bool) -> None:
        """A shard is done (`reused`: it was already there)."""
        with self.lock:
            self.partial.pop(path, None)
            self.shards += 1
            self.done_rows += rows
            if not reused:
                self.new_rows += rows
            self.tick(force=self.shards == self.total_shards)

    @property
    def rows(self) -> int:
        return self.done_rows + sum(self.partial.values())

    def line(self) -> str:
        now = time.perf_counter()
        made = self.new_rows + sum(self.partial.values())
        rate = made / max(now - self.t0, 1e-9)
        left = max(self.total_rows - self.rows, 0)
        eta = hms(left / rate) if rate > 0 else "--:--:--"
        text = (f"{self.shards}/{self.total_shards} shards  {self.rows:,}/{self.total_rows:,} rows  "
                f"{tok_rate(rate * self.seq_len)}  ETA {eta}")
        if self.live:
            filled = round(BAR * self.rows / max(self.total_rows, 1))
            return f"[ncagen] [{'#' * filled}{'.' * (BAR - filled)}] {text}"
        return f"[ncagen] {text}"

    def tick(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < self.every:
            return
        self.last = now
        end = "\n" if not self.live or self.shards == self.total_shards else ""
        prefix = "\r\x1b[2K" if self.live else ""
        print(prefix + self.line(), end=end, file=self.stream, flush=True)


class RowReporter:
    """Called by a worker with each batch's row count; sends running totals at most every
    `every` seconds through `send(rows_so_far)`."""

    def __init__(self, send, every: float = 1.0):
        self.send, self.every, self.rows, self.last = send, every, 0, time.perf_counter()

    def __call__(self, rows: int) -> None:
        self.rows += rows
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self.send(self.rows)
