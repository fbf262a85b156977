"""The command lines: flags -> a validated config -> one library call -> one-line errors.

Exit status: 0 done; 2 the command was refused before anything was written (bad input, an
unreachable band, no GPU to be had or no torch to drive it, the directory busy or holding
something else); 1 the environment failed mid-way (disk full, storage unreachable, permission
denied): what was written is kept, and rerunning the same command resumes; 130 interrupted.
"""

from __future__ import annotations

import argparse
import atexit
import math
import os
import re
import shlex
import sys
import threading

from .config import MAX_CONV_CHANNELS, MAX_HIDDEN, ConfigError, NCAConfig
from .plan import AUTO, BuildConfig

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}


# What reads as a value although it starts with '-': a minus then a digit (or '.' and a digit),
# as in newer Pythons' argparse (3.12.7, 3.13). In 3.11 only plain negative numbers did, so
# `--identity-bias -1e39` and `--band -0.1-0.5` read as a missing value and an unknown flag.
_NEGATIVE_NUMBER = re.compile(r"-\.?\d")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2, and '-' before a digit
    starts a value (a negative number, a band with a negative edge), not a flag."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message: str) -> None:
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def parse_amount(text: str, minimum: int = 1, flag: str = "") -> int:
    """'200M' -> 200_000_000; plain integers pass through; inf, nan and fractions are refused
    (the error names `flag` when given)."""
    what = f"{flag} amount" if flag else "amount"
    t = text.strip().upper()
    num, scale = (t[:-1], _SUFFIX[t[-1]]) if t[-1:] in _SUFFIX and t[-1:] else (t, 1)
    try:
        value = float(num) * scale
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a number with an optional K/M/B suffix") from None
    if not math.isfinite(value) or value != int(value) or value < minimum:
        raise ConfigError(f"{what} {text!r} must be a whole number >= {minimum}")
    return int(value)


def seconds_from_env(name: str, default: float | None, zero_ok: bool = False) -> float | None:
    """Seconds from the environment variable `name` (`default` when it is unset or empty);
    ValueError naming it when it is not a finite number > 0 (>= 0 with `zero_ok`)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
        what = "a number of seconds >= 0" if zero_ok else "a positive number of seconds"
        raise ValueError(f"{name} must be {what}, got {text!r}")
    return value


def build_parser(prog: str = "python -m ncagen.build") -> argparse.ArgumentParser:
    from .generate import DEFAULT_BATCH
    from .worker import GPU_BATCH

    d = NCAConfig()
    p = Parser(prog=prog,
               description="Build an NCA trajectory dataset: sharded Parquet, manifest, card.")
    p.add_argument("--recipe", help="build the release a recipe file names (e.g. "
                   "dataset_cards/nca-trajectories/recipe.json); its values replace the content "
                   "flags, which are then refused")
    p.add_argument("--band", action="append", help="complexity band LO-HI, repeatable (default 0.5-1.0)")
    p.add_argument("--mix", action="append", help="a mixture partition LO-HI:WEIGHT,LO-HI:WEIGHT,... "
                   "(e.g. 0.3-0.4:1,0.5-1.0:1), repeatable; its rows keep their own band's name")
    p.add_argument("--states", action="append", type=int, help="alphabet size, repeatable (default 10)")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--rows", help="train rows per partition (K/M/B suffixes allowed)")
    amount.add_argument("--tokens", help="train tokens per partition, e.g. 200M")
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val-rows", help="validation rows per partition (rules disjoint from train)")
    val.add_argument("--val-fraction", type=float, default=0.0, help="validation rows as a fraction of train")
    p.add_argument("--out", required=True, help="output directory: a local path or an object-store "
                   "URL (s3://bucket/prefix)")
    p.add_argument("--shared-fs", action="store_true", help="assert that a local --out is a shared "
                   "filesystem (NFS) mounted at the same path on every Ray node")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-rows", default=AUTO,
                   help=f"rows per Parquet file, or {AUTO} (the default): 32 train and 8 "
                   f"validation files per config (more, in multiples, to keep each under ~256 MB; "
                   f"fewer, of ~0.5 MB, for a split too small for that)")
    p.add_argument("--grid", type=int, default=d.grid)
    p.add_argument("--patch", type=int, default=d.patch)
    p.add_argument("--seq-len", type=int, default=d.seq_len)
    p.add_argument("--burn-in", type=int, default=d.burn_in)
    p.add_argument("--dt", type=int, default=d.dt)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--identity-bias", type=float, default=d.identity_bias)
    p.add_argument("--sims-per-rule", type=int, default=d.sims_per_rule)
    p.add_argument("--conv-channels", type=int, default=d.conv_channels,
                   help=f"output channels of the rule's 3x3 conv (default {d.conv_channels}, "
                   f"at most {MAX_CONV_CHANNELS})")
    p.add_argument("--hidden", type=int, default=d.hidden, help=f"width of the rule's hidden "
                   f"1x1 layer (default {d.hidden}, at most {MAX_HIDDEN})")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (rollouts; gzip is always on CPU)")
    p.add_argument("--executor", choices=("ray", "local"), default="ray",
                   help="ray: Ray workers (an embedded local Ray unless --address); local: this process")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--workers", type=int, help="CPU workers to run at once (default: one per core)")
    p.add_argument("--batch", type=int, help=f"candidates rolled out per batch "
                   f"(default {DEFAULT_BATCH} on CPU, {GPU_BATCH} on a GPU)")
    p.add_argument("--overwrite", action="store_true", help="replace a build with a different config")
    return p


def given_flags(argv: list[str]) -> set[str]:
    """The destinations of the flags actually written in argv (not their defaults)."""
    p = build_parser()
    for action in p._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    return set(vars(p.parse_args(argv)))


def config_from_args(args: argparse.Namespace, given: set[str] = frozenset()) -> BuildConfig:
    """Flags -> a validated BuildConfig (raises ConfigError). `given`: the flags written on
    the command line, which with --recipe must only say where and how to run."""
    from .config import Band, Mix

    if args.recipe is not None:
        from .recipe import RUN_FLAGS, load_recipe

        def flags(dests) -> str:
            return ", ".join("--" + d.replace("_", "-") for d in dests)

        extra = sorted(given - set(RUN_FLAGS))
        if extra:
            raise ConfigError(f"{flags(extra)}: the recipe sets what a build holds; beside "
                              f"--recipe give only where and how it runs "
                              f"({flags(f for f in RUN_FLAGS if f != 'recipe')})")
        return BuildConfig(**load_recipe(args.recipe), out=args.out, device=args.device,
                           executor=args.executor, address=args.address, workers=args.workers,
                           batch=args.batch, overwrite=args.overwrite, shared_fs=args.shared_fs)
    mixes = tuple(Mix.parse(m) for m in (args.mix or []))
    bands = tuple(Band.parse(b) for b in (args.band or ([] if mixes else ["0.5-1.0"])))
    states = tuple(args.states or [10])
    if len(set(bands)) != len(bands) or len(set(states)) != len(states):
        raise ConfigError("a --band or --states value is repeated")
    if args.rows is None and args.tokens is None:
        raise ConfigError("give the amount per partition with --rows or --tokens")
    nca = NCAConfig(states=states[0], grid=args.grid, patch=args.patch, seq_len=args.seq_len,
                    burn_in=args.burn_in, dt=args.dt, temperature=args.temperature,
                    identity_bias=args.identity_bias, sims_per_rule=args.sims_per_rule,
                    conv_channels=args.conv_channels, hidden=args.hidden)
    return BuildConfig(
        out=args.out, bands=bands, states=states, mixes=mixes,
        rows=parse_amount(args.rows, flag="--rows") if args.rows is not None else None,
        tokens=parse_amount(args.tokens, flag="--tokens") if args.tokens is not None else None,
        val_rows=(parse_amount(args.val_rows, minimum=0, flag="--val-rows")
                  if args.val_rows is not None else None),
        val_fraction=args.val_fraction, shard_rows=shard_rows_arg(args.shard_rows), seed=args.seed,
        nca=nca, device=args.device, executor=args.executor, address=args.address,
        workers=args.workers, batch=args.batch, overwrite=args.overwrite,
        shared_fs=args.shared_fs)


def shard_rows_arg(text: str) -> int | str:
    """--shard-rows: an amount, or auto."""
    return AUTO if text.strip().lower() == AUTO else parse_amount(text, flag="--shard-rows")


def exit_now(code: int | None) -> None:
    """End the process with `code` once a command has returned, skipping the interpreter's
    teardown.

    By then every file is written and closed and a private Ray is stopped. What is left is
    freeing the loaded extension modules (Ray's, pyarrow's, numba's, matplotlib's): about 0.5 s
    of a build's wall time on two cores, for nothing. The exit handlers still run first
    (Ray's, logging's, temp folders'), and the standard streams are flushed. While a
    non-daemon thread is still running, the ordinary exit waits for it instead.
    """
    from .threads import close_pools

    code = 0 if code is None else int(code)
    close_pools()  # idle by now; their threads are not daemons
    if any(t.is_alive() and not t.daemon for t in threading.enumerate()
           if t is not threading.current_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it anyway
            pass
    os._exit(code)


def root_cause(e: BaseException) -> BaseException:
    """The error a user should see, unwrapped from Ray's task error if need be."""
    while getattr(e, "cause", None) is not None and e.cause is not e:
        e = e.cause
    return e


def one_line(e: BaseException) -> str:
    text = str(e.args[0] if e.args else e)
    return " ".join(text.split()) if "\n" not in text.strip() else text.strip().splitlines()[0]


def build_main(argv: list[str], prog: str = "python -m ncagen.build") -> int:
    """`python -m ncagen.build` (or `ncagen build`, the `prog`); returns the exit status."""
    from .build import build, summary
    from .extras import MissingExtra
    from .generate import BandUnreachable
    from .lock import LockedError
    from .progress import interval_from_env
    from .storage import StorageError, describe_error, redact
    from .worker import DeviceError

    args = build_parser(prog).parse_args(argv)
    refused = (ConfigError, ValueError, BandUnreachable, DeviceError, LockedError, MissingExtra)
    try:
        cfg = config_from_args(args, given_flags(argv))
        interval_from_env()
        command = redact(" ".join([prog, *(shlex.quote(a) for a in argv)]))  # it is recorded
        manifest = build(cfg, command)
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 (sorted below; anything else is a bug: re-raised)
        cause = root_cause(e)
        if isinstance(cause, refused):
            print(f"error: {redact(one_line(cause))}", file=sys.stderr)
            return 2
        if isinstance(cause, StorageError):
            print(f"error: {redact(one_line(cause))}", file=sys.stderr)
            return 1
        if isinstance(cause, OSError):
            print(f"error: {describe_error(cause, args.out)}", file=sys.stderr)
            return 1
        if isinstance(cause, MemoryError):
            print(f"error: out of memory ({redact(one_line(cause))[:200]}); a smaller --batch, "
                  f"--seq-len or --workers needs less", file=sys.stderr)
            return 1
        raise
    print(redact(summary(manifest, cfg.out)))
    return 0
