"""The build job: plan shards, fan generation out over Ray workers (or run in-process), keep the
manifest, resume after a crash.  Run as `python -m ncagen.build ...` (see `--help`).

Each shard's rows are a pure function of (generation config, seed, partition, split, shard
index), so the dataset does not depend on the number of workers or the order they finish.
A shard is skipped when its file already exists under its final name; a rerun of the same
command after a crash or Ctrl-C therefore builds only what is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field

from . import __version__
from .config import Band, ConfigError, NCAConfig
from .generate import DEFAULT_BATCH, BandUnreachable

SPLITS = ("train", "validation")
DEFAULT_SHARD_ROWS = 100_000  # ~400 MB of int32 tokens before compression
GPU_BATCH = 32_768  # a GPU needs far larger batches than the CPU engine to be busy


@dataclass(frozen=True)
class BuildConfig:
    """A whole build: which partitions, how much of each, where, and how to run it."""

    out: str
    bands: tuple = (Band(0.5, 1.0),)
    states: tuple = (10,)
    rows: int | None = None  # train rows per partition
    tokens: int | None = None  # or train tokens per partition
    val_rows: int | None = None
    val_fraction: float = 0.0
    shard_rows: int = DEFAULT_SHARD_ROWS
    seed: int = 0
    nca: NCAConfig = field(default_factory=NCAConfig)
    device: str = "auto"
    executor: str = "ray"
    address: str | None = None
    workers: int | None = None
    batch: int | None = None  # candidates per rollout batch; None: by device
    overwrite: bool = False

    def __post_init__(self) -> None:
        if (self.rows is None) == (self.tokens is None):
            raise ConfigError("give the amount per partition as exactly one of --rows or --tokens")
        if self.train_rows < 1:
            raise ConfigError(f"rows must be >= 1, got {self.train_rows}")
        if not self.bands or not self.states:
            raise ConfigError("at least one --band and one --states are needed")
        for n in self.states:
            dataclasses.replace(self.nca, states=n)  # validates every alphabet
        if self.val_rows is not None and self.val_rows < 0:
            raise ConfigError(f"val-rows must be >= 0, got {self.val_rows}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.shard_rows < 1:
            raise ConfigError(f"shard-rows must be >= 1, got {self.shard_rows}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.executor not in ("ray", "local"):
            raise ConfigError(f"executor must be ray or local, got {self.executor!r}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.batch is not None and self.batch < 1:
            raise ConfigError(f"batch must be >= 1, got {self.batch}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda[:i], got {self.device!r}")

    @property
    def train_rows(self) -> int:
        return self.rows if self.rows is not None else math.ceil(self.tokens / self.nca.seq_len)

    @property
    def validation_rows(self) -> int:
        if self.val_rows is not None:
            return self.val_rows
        return round(self.train_rows * self.val_fraction)

    def identity(self) -> dict:
        """What decides the dataset's content (not where or how it runs)."""
        return {
            "nca": {k: v for k, v in self.nca.to_dict().items() if k != "states"},
            "bands": [str(b) for b in self.bands],
            "states": list(self.states),
            "train_rows": self.train_rows,
            "validation_rows": self.validation_rows,
            "shard_rows": self.shard_rows,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class ShardTask:
    """One shard to build: a pure description a worker can run anywhere."""

    nca: NCAConfig
    band: Band
    config_name: str
    split: str
    index: int
    count: int
    rows: int
    key: int

    @property
    def path(self) -> str:
        from .shards import shard_path

        return shard_path(self.config_name, self.split, self.index, self.count)


def shard_key(seed: int, states: int, band: Band, split: str, index: int) -> int:
    """The generation key of shard `index` of a split: a hash of (seed, partition, split, index)."""
    from .rng import derive

    return int(derive(seed, states, round(band.lo * 1e6), round(band.hi * 1e6),
                      SPLITS.index(split), index))


def plan(cfg: BuildConfig) -> list[ShardTask]:
    """Every shard of the build, in a fixed order."""
    tasks = []
    for n in cfg.states:
        nca = dataclasses.replace(cfg.nca, states=n)
        for band in cfg.bands:
            for split, total in zip(SPLITS, (cfg.train_rows, cfg.validation_rows)):
                count = math.ceil(total / cfg.shard_rows)
                for i in range(count):
                    tasks.append(ShardTask(nca, band, band.name(n), split, i, count,
                                           min(cfg.shard_rows, total - i * cfg.shard_rows),
                                           shard_key(cfg.seed, n, band, split, i)))
    return tasks


def run_shard(task: ShardTask, out: str, device: str = "cpu", batch: int | None = None,
              threads: int | None = None) -> dict:
    """Generate one shard and write it atomically; an existing shard is kept, not rebuilt."""
    from . import shards
    from .generate import ShardStats, generate
    from .rollout import resolve_device

    if shards.exists(out, task.path):
        return {**shards.read_shard_result(out, task.path).to_dict(), "reused": True}
    if threads:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    device = device if device == "cpu" else resolve_device(device)  # "cpu" needs no torch
    batch = batch or (GPU_BATCH if device.startswith("cuda") else DEFAULT_BATCH)
    stats, t0 = ShardStats(), time.perf_counter()
    tables = (shards.to_table(cols, task.nca, task.config_name)
              for cols in generate(task.nca, task.band, task.key, task.rows, device, batch, stats))
    meta = lambda: {"tokens": task.rows * task.nca.seq_len, "candidates": stats.candidates,  # noqa: E731
                    "accepted": stats.accepted, "key": str(task.key), "version": __version__}
    result = shards.write_shard(out, task.path, tables, shards.schema(task.nca), meta)
    result.seconds = time.perf_counter() - t0
    return {**result.to_dict(), "reused": False}


# the build ---------------------------------------------------------------------------------
def prepare_output(cfg: BuildConfig) -> dict | None:
    """Check the output directory against this build; returns the manifest to resume from."""
    from . import shards

    fsys, base = shards.filesystem(cfg.out)
    from pyarrow import fs

    info = fsys.get_file_info(base)
    if info.type == fs.FileType.File:
        raise ConfigError(f"output {cfg.out} is a file, not a directory")
    if info.type == fs.FileType.NotFound:
        return None
    entries = fsys.get_file_info(fs.FileSelector(base))
    manifest = shards.read_manifest(cfg.out)
    if manifest is None:
        if entries:
            raise ConfigError(f"output {cfg.out} is not empty and holds no ncagen build "
                              f"({shards.MANIFEST}); choose an empty or new directory")
        return None
    if manifest.get("config") == cfg.identity():
        return manifest
    if not cfg.overwrite:
        raise ConfigError(f"output {cfg.out} holds a build with a different config; "
                          f"use --overwrite to replace it or choose another directory")
    for name in ("data", shards.MANIFEST, "README.md", "figures"):
        path = f"{base}/{name}"
        kind = fsys.get_file_info(path).type
        if kind == fs.FileType.Directory:
            fsys.delete_dir(path)
        elif kind == fs.FileType.File:
            fsys.delete_file(path)
    return None


def _clean_temps(out: str) -> None:
    """Remove temp files a killed worker left behind (never a finished shard)."""
    from pyarrow import fs

    from . import shards

    fsys, base = shards.filesystem(out)
    if fsys.get_file_info(f"{base}/data").type != fs.FileType.Directory:
        return
    for info in fsys.get_file_info(fs.FileSelector(f"{base}/data", recursive=True)):
        if info.type == fs.FileType.File and info.path.endswith(".tmp"):
            fsys.delete_file(info.path)


class Progress:
    """Shards done, rows, tokens/s and ETA on stderr, at most every `every` seconds."""

    def __init__(self, total_rows: int, total_shards: int, every: float = 2.0, stream=sys.stderr):
        self.total_rows, self.total_shards, self.every, self.stream = total_rows, total_shards, every, stream
        self.rows = self.new_rows = self.shards = 0
        self.t0 = self.last = time.perf_counter()

    def update(self, result: dict, seq_len: int, force: bool = False) -> None:
        self.shards += 1
        self.rows += result["rows"]
        if not result.get("reused"):
            self.new_rows += result["rows"]
        now = time.perf_counter()
        if force or now - self.last >= self.every or self.shards == self.total_shards:
            self.last = now
            rate = self.new_rows / max(now - self.t0, 1e-9)
            left = self.total_rows - self.rows
            eta = _hms(left / rate) if rate > 0 else "--:--:--"
            print(f"[ncagen] {self.shards}/{self.total_shards} shards  {self.rows:,}/{self.total_rows:,} rows  "
                  f"{_tok_rate(rate * seq_len)}  ETA {eta}", file=self.stream, flush=True)


def _tok_rate(per_second: float) -> str:
    return f"{per_second / 1e6:.2f}M tok/s" if per_second >= 1e6 else f"{per_second / 1e3:.1f}K tok/s"


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _execute_local(cfg: BuildConfig, tasks: list[ShardTask], on_result) -> None:
    for task in tasks:
        on_result(task, run_shard(task, cfg.out, cfg.device, cfg.batch))


MAX_RETRIES = 4  # Ray reruns a shard whose worker process or node died this many times


def _ray_init_kwargs(cfg: BuildConfig) -> dict:
    """ray.init arguments: join --address / RAY_ADDRESS, else start a private local Ray."""
    address = cfg.address or os.environ.get("RAY_ADDRESS") or None
    common = {"configure_logging": False, "log_to_driver": True}
    if address is not None:
        return {"address": address, **common}
    # "local" starts a fresh instance even when a `ray start` cluster runs on this machine; the
    # object store only carries task arguments and results (shards go straight to storage).
    return {"address": "local", "include_dashboard": False,
            "object_store_memory": 200 * 2**20, **common}


def _ray_task_options(cfg: BuildConfig, nodes: list[dict], todo: int) -> tuple[dict, str]:
    """Resources of one shard task and the device it rolls out on.

    GPU: one GPU per task and the CPUs that go with it on its node (for gzip); CPU: cores /
    --workers, else one core per task, or more when there are fewer shards to build than cores.
    `nodes` is ray.nodes(); `todo` the number of shards to build.
    """
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    gpu_nodes = [r for r in alive if r.get("GPU", 0) >= 1]
    if cfg.device.startswith("cuda") or (cfg.device == "auto" and gpu_nodes):
        # with no GPU node up yet (an autoscaling cluster) ask for one GPU and one CPU
        per = min((max(1, int(r.get("CPU", 1) // r["GPU"])) for r in gpu_nodes), default=1)
        return {"num_gpus": 1, "num_cpus": per, "runtime_env": _threads_env(per)}, "cuda"
    total = sum(int(r.get("CPU", 0)) for r in alive)
    biggest = max((int(r.get("CPU", 0)) for r in alive), default=1)
    per = max(1, min(total // (cfg.workers or max(todo, 1)), biggest))
    return {"num_cpus": per, "runtime_env": _threads_env(per)}, "cpu"


def _threads_env(cpus: int) -> dict:
    """Environment of a worker that runs `cpus` threads: numba rollouts and gzip/zstd pools.

    numba.set_num_threads() holds only for the thread that calls it, and the generator works in
    threads of its own, so the cap must be the process default: NUMBA_NUM_THREADS at start.
    complexity.default_workers() reads OMP_NUM_THREADS.
    """
    return {"env_vars": {"NUMBA_NUM_THREADS": str(cpus), "OMP_NUM_THREADS": str(cpus)}}


def _execute_ray(cfg: BuildConfig, tasks: list[ShardTask], on_result) -> None:
    """Run shards as Ray tasks; Ray itself reruns a task whose worker or node died."""
    import ray

    from . import shards

    out = cfg.out if "://" in cfg.out else os.path.abspath(cfg.out)  # a job's workers start elsewhere
    started = not ray.is_initialized()
    init = _ray_init_kwargs(cfg)
    if started:
        ray.init(**init)
    pending: dict = {}
    try:
        todo = {t.path for t in tasks if not shards.exists(out, t.path)}
        opts, device = _ray_task_options(cfg, ray.nodes(), len(todo))
        if "num_gpus" in opts and init["address"] == "local" and not ray.cluster_resources().get("GPU"):
            # a private Ray has no autoscaler: GPU tasks would wait forever
            raise ValueError(f"device {cfg.device!r} requested but no CUDA GPU is visible")
        remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(run_shard).options(**opts)
        for t in tasks:
            if t.path in todo:
                pending[remote.remote(t, out, device, cfg.batch, opts["num_cpus"])] = t
            else:  # checked here, not in a task: resuming starts no workers
                on_result(t, run_shard(t, out))
        refs = list(pending)
        while refs:
            (ref,), refs = ray.wait(refs, num_returns=1)
            on_result(pending[ref], ray.get(ref))
            del pending[ref]
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()


def build(cfg: BuildConfig, command: str = "") -> dict:
    """Run a whole build into cfg.out and return its manifest."""
    from . import shards

    manifest = prepare_output(cfg)
    _clean_temps(cfg.out)
    tasks = plan(cfg)
    manifest = manifest or {"format": 1, "config": cfg.identity(), "shards": {}}
    manifest.update(ncagen_version=__version__, command=command or manifest.get("command", ""))
    manifest["shards"] = {p: s for p, s in manifest.get("shards", {}).items()
                          if p in {t.path for t in tasks}}
    manifest["complete"] = False
    shards.write_manifest(cfg.out, manifest)
    progress = Progress(sum(t.rows for t in tasks), len(tasks))
    t0 = time.perf_counter()

    def on_result(task: ShardTask, result: dict) -> None:
        entry = {k: v for k, v in result.items() if k != "reused"}
        if result.get("reused") and task.path in manifest["shards"]:
            entry["seconds"] = manifest["shards"][task.path].get("seconds", 0.0)
        manifest["shards"][task.path] = entry
        shards.write_manifest(cfg.out, manifest)
        progress.update(result, task.nca.seq_len)

    (_execute_ray if cfg.executor == "ray" else _execute_local)(cfg, tasks, on_result)
    _clean_temps(cfg.out)  # left by workers killed mid-shard (Ray reran their shards)
    manifest["partitions"] = _partition_summary(tasks, manifest["shards"])
    manifest["build_seconds"] = round(time.perf_counter() - t0, 3)
    manifest["complete"] = True
    shards.write_manifest(cfg.out, manifest)
    from .card import write_card

    write_card(cfg.out)  # the directory is now a ready Hub dataset repository
    return manifest


def _partition_summary(tasks: list[ShardTask], done: dict) -> dict:
    parts: dict = {}
    for t in tasks:
        s = done[t.path]
        p = parts.setdefault(t.config_name, {
            "band": str(t.band), "lo": t.band.lo, "hi": t.band.hi, "states": t.nca.states,
            "splits": {}, "candidates": 0, "accepted": 0, "seconds": 0.0})
        sp = p["splits"].setdefault(t.split, {"rows": 0, "tokens": 0, "shards": 0})
        sp["rows"] += s["rows"]
        sp["tokens"] += s["tokens"]
        sp["shards"] += 1
        p["candidates"] += s["candidates"]
        p["accepted"] += s["accepted"]
        p["seconds"] += s["seconds"]
    for p in parts.values():
        p["acceptance_rate"] = p["accepted"] / max(p["candidates"], 1)
        p["seconds"] = round(p["seconds"], 3)
    return parts


def summary(manifest: dict, out: str) -> str:
    """A human-readable end-of-build report."""
    lines = [f"ncagen {manifest['ncagen_version']}: built {out} in {manifest['build_seconds']:.1f}s"]
    for name, p in manifest["partitions"].items():
        rows = sum(s["rows"] for s in p["splits"].values())
        toks = sum(s["tokens"] for s in p["splits"].values())
        rate = toks / p["seconds"] if p["seconds"] else float("nan")
        splits = ", ".join(f"{k} {v['rows']:,}" for k, v in p["splits"].items())
        lines.append(f"  {name:<28} rows {rows:>10,} ({splits})  tokens {toks:>13,}  "
                     f"acceptance {p['acceptance_rate']:.1%}  {_tok_rate(rate)} per worker")
    lines.append(f"  data: {out}/data/<config>/<split>-*.parquet   manifest: {out}/ncagen.json   "
                 f"card: {out}/README.md")
    return "\n".join(lines)


# command line ------------------------------------------------------------------------------
_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}


def parse_amount(text: str, minimum: int = 1) -> int:
    """'200M' -> 200_000_000; plain integers pass through."""
    t = text.strip().upper()
    num, scale = (t[:-1], _SUFFIX[t[-1]]) if t[-1:] in _SUFFIX and t[-1:] else (t, 1)
    try:
        value = float(num) * scale
    except ValueError:
        raise ConfigError(f"amount {text!r} is not a number with an optional K/M/B suffix") from None
    if value != int(value) or value < minimum:
        raise ConfigError(f"amount {text!r} must be a whole number >= {minimum}")
    return int(value)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> None:
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    d = NCAConfig()
    p = _Parser(prog="python -m ncagen.build", description=__doc__.split("\n\n")[0])
    p.add_argument("--band", action="append", help="complexity band LO-HI, repeatable (default 0.5-1.0)")
    p.add_argument("--states", action="append", type=int, help="alphabet size, repeatable (default 10)")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--rows", help="train rows per partition (K/M/B suffixes allowed)")
    amount.add_argument("--tokens", help="train tokens per partition, e.g. 200M")
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val-rows", help="validation rows per partition (rules disjoint from train)")
    val.add_argument("--val-fraction", type=float, default=0.0, help="validation rows as a fraction of train")
    p.add_argument("--out", required=True, help="output directory (local path or filesystem URL)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-rows", default=str(DEFAULT_SHARD_ROWS), help="rows per Parquet file")
    p.add_argument("--grid", type=int, default=d.grid)
    p.add_argument("--patch", type=int, default=d.patch)
    p.add_argument("--seq-len", type=int, default=d.seq_len)
    p.add_argument("--burn-in", type=int, default=d.burn_in)
    p.add_argument("--dt", type=int, default=d.dt)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--identity-bias", type=float, default=d.identity_bias)
    p.add_argument("--sims-per-rule", type=int, default=d.sims_per_rule)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (rollouts; gzip is always on CPU)")
    p.add_argument("--executor", choices=("ray", "local"), default="ray",
                   help="ray: Ray workers (an embedded local Ray unless --address); local: this process")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--workers", type=int, help="CPU workers to run at once (default: one per core)")
    p.add_argument("--batch", type=int, help=f"candidates rolled out per batch "
                   f"(default {DEFAULT_BATCH} on CPU, {GPU_BATCH} on a GPU)")
    p.add_argument("--overwrite", action="store_true", help="replace a build with a different config")
    return p


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    """Flags -> a validated BuildConfig (raises ConfigError)."""
    bands = tuple(Band.parse(b) for b in (args.band or ["0.5-1.0"]))
    states = tuple(args.states or [10])
    if len(set(bands)) != len(bands) or len(set(states)) != len(states):
        raise ConfigError("a --band or --states value is repeated")
    if args.rows is None and args.tokens is None:
        raise ConfigError("give the amount per partition with --rows or --tokens")
    nca = NCAConfig(states=states[0], grid=args.grid, patch=args.patch, seq_len=args.seq_len,
                    burn_in=args.burn_in, dt=args.dt, temperature=args.temperature,
                    identity_bias=args.identity_bias, sims_per_rule=args.sims_per_rule)
    return BuildConfig(
        out=args.out, bands=bands, states=states,
        rows=parse_amount(args.rows) if args.rows is not None else None,
        tokens=parse_amount(args.tokens) if args.tokens is not None else None,
        val_rows=parse_amount(args.val_rows, minimum=0) if args.val_rows is not None else None,
        val_fraction=args.val_fraction, shard_rows=parse_amount(args.shard_rows), seed=args.seed,
        nca=nca, device=args.device, executor=args.executor, address=args.address,
        workers=args.workers, batch=args.batch, overwrite=args.overwrite)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        if cfg.device != "auto" and cfg.executor == "local":  # Ray checks on its workers
            from .rollout import resolve_device

            resolve_device(cfg.device)
        command = "python -m ncagen.build " + " ".join(shlex.quote(a) for a in argv)
        manifest = build(cfg, command)
    except (ConfigError, ValueError, BandUnreachable) as e:
        print(f"error: {_root_cause(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    print(summary(manifest, cfg.out))
    return 0


def _root_cause(e: BaseException) -> str:
    """The message of a user-facing error, unwrapped from Ray's task error if need be."""
    cause = getattr(e, "cause", None) or e
    return str(cause.args[0] if cause.args else cause).splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())
