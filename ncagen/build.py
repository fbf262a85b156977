"""The build job: check, plan, lock, resume, run the shards, write the manifest and the card.
Run as `python -m ncagen.build ...` (flags in `ncagen.cli`).

Everything that can be wrong with the command is found before the first write: the flags, the
output directory (a foreign folder, another config, another generator), the cluster (no GPU to
be had, a local --out on several nodes) and the bands (one that no rule of the alphabet
reaches). Then the build takes the directory's lock, keeps every finished shard that matches
its record, rebuilds the rest, and writes the manifest as shards finish. Rerunning the same
command after a crash or Ctrl-C builds only what is missing; the result is byte for byte an
uninterrupted build's.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from . import __version__
from .config import ConfigError, Mix
from .plan import BuildConfig, ShardTask, partitions, plan
from .progress import Progress, tok_rate

FORMAT = 2  # manifest format: 2 adds the generator fingerprint and each shard's mtime


# checks (read only) --------------------------------------------------------------------------
HUB_SCHEMES = ("hf",)  # huggingface_hub's filesystem: publish is the way to a repository
HUB_WRITABLE = "buckets/"  # hf://buckets/...: the Hub's plain storage, written like any other


def check_output(store, cfg: BuildConfig) -> dict | None:
    """The manifest to resume from (None: a fresh build); ConfigError when the directory holds
    something this build must not touch. Reads only."""
    from .fingerprint import describe
    from .lock import LOCK
    from .shards import MANIFEST
    from .storage import scheme

    if store.local:
        check_local_path(store.url())
    elif scheme(store.url()) in HUB_SCHEMES and not store.url().split("://", 1)[1].startswith(
            HUB_WRITABLE):
        raise ConfigError(f"output {store.url()}: a build is not written into a Hub repository; "
                          "build into a local directory or an object store (hf://buckets/... "
                          "too), then `python -m ncagen.publish DIR --repo ORG/NAME` uploads it")
    kind = store.kind()
    if kind == "file":
        raise ConfigError(f"output {store.url()} is a file, not a directory")
    if kind == "missing":
        return None
    try:
        manifest = store.read_json(MANIFEST)
        damage = None if manifest is None else manifest_damage(manifest)
    except ValueError as err:  # not JSON
        damage = str(err)
    if damage is not None:
        if cfg.overwrite:  # it is an ncagen build's manifest by name: --overwrite may replace it
            return None
        raise ConfigError(f"output {store.url()}: {damage}; use --overwrite to replace the build "
                          f"or choose another directory")
    if manifest is None:
        if [e for e in store.listdir() if e != LOCK]:
            raise ConfigError(f"output {store.url()} is not empty and holds no ncagen build "
                              f"({MANIFEST}); choose an empty or new directory")
        return None
    if cfg.overwrite:
        return None
    if manifest.get("config") != cfg.identity():
        raise ConfigError(f"output {store.url()} holds a build with a different config "
                          f"({config_difference(manifest.get('config') or {}, cfg.identity())}); "
                          f"use --overwrite to replace it or choose another directory")
    theirs, ours = manifest.get("generator") or {}, describe()
    if theirs.get("fingerprint") != ours["fingerprint"]:
        raise ConfigError(
            f"output {store.url()} was built by another generator (ncagen "
            f"{theirs.get('ncagen', manifest.get('ncagen_version', '?'))}, fingerprint "
            f"{theirs.get('fingerprint', 'none')}; this is {ours['ncagen']}, {ours['fingerprint']}): "
            f"its rows may differ from this one's; rebuild it with --overwrite or use that version")
    return manifest


def manifest_damage(manifest) -> str | None:
    """What makes a manifest unusable (its shape, not its content), or None."""
    from .shards import MANIFEST

    if not isinstance(manifest, dict):
        return f"{MANIFEST} is not a JSON object"
    for key in ("config", "shards", "generator"):
        if not isinstance(manifest.get(key, {}), dict):
            return f"{MANIFEST}'s {key!r} is not a JSON object"
    for path, record in manifest.get("shards", {}).items():  # what resume reads of a record
        if not (isinstance(record, dict) and record.get("path") == path
                and isinstance(record.get("rows"), int)):
            return f"{MANIFEST}'s record of shard {str(path)[:80]} is damaged"
    return None


def check_local_path(path: str) -> None:
    """Refuse, before anything is written, a local output path no directory can be made at:
    something other than a directory there (a device, a dangling link), a file above it, or a
    name longer than the filesystem takes."""
    import os

    if os.path.lexists(path) and not os.path.isdir(path):
        raise ConfigError(f"output {path} exists and is not a directory")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"output {path}: {parent} is not a directory")
    try:
        longest = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        longest = 255
    for name in path.split(os.sep):
        if len(os.fsencode(name)) > longest:
            raise ConfigError(f"output {path}: the name {name[:40]}... is longer than the "
                              f"{longest} bytes a file name may have")


def config_difference(theirs: dict, ours: dict) -> str:
    """What differs between a recorded config and this build's, for the refusal's message:
    `key: theirs here, ours now` for the first few keys (nca's fields one by one)."""
    def flat(d) -> dict:
        d = d if isinstance(d, dict) else {"config": d}  # a damaged manifest still gets a line
        nca = d.get("nca") if isinstance(d.get("nca"), dict) else {}
        return {**{k: v for k, v in d.items() if k != "nca"}, **{f"nca.{k}": v for k, v in nca.items()}}

    a, b = flat(theirs), flat(ours)
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
    text = "; ".join(f"{k.removeprefix('nca.')}: {a.get(k, 'none')} there, {b.get(k, 'none')} now"
                     for k in keys[:3])
    return text + ("; ..." if len(keys) > 3 else "")


def missing_partitions(store, tasks: list[ShardTask]) -> set[str]:
    """Config names with at least one planned shard not under its final name (one listing)."""
    have = store.files("data")
    return {t.config_name for t in tasks if t.path not in have}


def probe_bands(tasks: list[ShardTask], names: set[str]) -> None:
    """Raise BandUnreachable now, before any write, for a partition whose band no rule reaches.
    Makes the first row of each partition's first shard (the CPU engine, a fraction of a
    second), which is also that shard's first row: nothing is wasted but the time. A mixture's
    every component band is probed."""
    from .generate import generate

    for name, task in partitions(tasks).items():
        if name in names:  # every band of a mixture, whatever rows its first shard takes of it
            for band, key, _ in task.components():
                next(iter(generate(task.nca, band, key, 1)))


# the build ------------------------------------------------------------------------------------
def build(cfg: BuildConfig, command: str = "", progress_stream=None) -> dict:
    """Run a whole build into cfg.out and return its manifest."""
    from .executors import executor
    from .lock import BuildLock
    from .storage import Storage

    store = Storage(cfg.out)
    tasks = plan(cfg)
    check_output(store, cfg)
    runner = executor(cfg)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="ncagen-probe") as side:
            probe = side.submit(probe_bands, tasks, missing_partitions(store, tasks))
            runner.setup(len(tasks))  # starting Ray hides the probe's kernel load
            probe.result()
        with BuildLock(store):  # the first write
            return _locked_build(store, cfg, tasks, runner, command, progress_stream)
    finally:
        runner.close()


def _locked_build(store, cfg: BuildConfig, tasks: list[ShardTask], runner, command: str,
                  progress_stream) -> dict:
    from . import shards
    from .fingerprint import describe

    manifest = check_output(store, cfg)  # again: another build may have finished meanwhile
    if manifest is None and cfg.overwrite:
        for name in ("data", shards.MANIFEST, "README.md", "figures", shards.PREVIEW_DIR):
            store.delete(name)
    _clean_temps(store)  # the lock is ours: temp files are a dead build's
    manifest = manifest or {"format": FORMAT, "config": cfg.identity(), "shards": {}}
    manifest.update(format=FORMAT, generator=describe(), ncagen_version=__version__,
                    command=command or manifest.get("command", ""), complete=False)
    if cfg.release:
        manifest["release"] = cfg.release  # the version a recipe names (not part of the config)
    manifest["machine"] = machine()  # where the driver ran: for the card's rebuild times
    progress = Progress(sum(t.rows for t in tasks), len(tasks), cfg.nca.seq_len,
                        stream=progress_stream)
    done, todo = resume(store, tasks, manifest.get("shards", {}), progress.stream)
    manifest["shards"] = done
    shards.write_manifest(store, manifest)
    for t in tasks:
        if t.path in done:
            progress.finished(t.path, t.rows, reused=True)
    t0 = time.perf_counter()

    def on_result(task: ShardTask, record: dict) -> None:
        manifest["shards"][task.path] = record
        shards.write_manifest(store, manifest)
        progress.finished(task.path, record["rows"], reused=False)

    # a rerun of a finished build changes nothing: its card stands (rendering reads every shard)
    card_stands = bool(manifest.get("partitions")) and not todo and store.kind("README.md") == "file"
    if not card_stands:  # the driver waits on the shards: it can load the card's drawing now
        threading.Thread(target=_warm_card, name="ncagen-card-warm-up", daemon=True).start()
    try:
        runner.run(todo, lambda task, rows: progress.running(task.path, rows), on_result)
    finally:  # temp files of attempts that died (Ray reran them) or were cut short
        with contextlib.suppress(Exception):
            _clean_temps(store)
    manifest["shards"] = {t.path: manifest["shards"][t.path] for t in tasks}  # plan order
    manifest["partitions"] = partition_summary(tasks, manifest["shards"])
    manifest["build_seconds"] = round(time.perf_counter() - t0, 3)
    manifest["complete"] = True
    shards.write_manifest(store, manifest)
    if not card_stands:
        from .card import write_card

        closing = threading.Thread(target=runner.close, name="ncagen-close")
        closing.start()  # stopping a private Ray takes a second: the card needs no Ray
        try:
            write_card(cfg.out, quick=True)  # the directory is now a ready Hub dataset repository
        finally:
            closing.join()
    return manifest


def _warm_card() -> None:
    """Load the card's drawing code ahead of time; a failure here only means it loads later."""
    with contextlib.suppress(Exception):
        from .card.figures import warm_up

        warm_up()


def machine() -> dict:
    """The driver's machine, as the card reports it: cores and CPU model."""
    import os
    import platform

    model = platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu": model}


def resume(store, tasks: list[ShardTask], records: dict, log) -> tuple[dict, list[ShardTask]]:
    """(records of the shards to keep, tasks to build). A shard is kept when it matches its
    record, or when a file without a record is exactly the planned shard; any other file
    under a shard's name is rebuilt, and said so."""
    from . import shards

    listing = store.files("data")
    done, todo = {}, []
    for t in tasks:
        entry, record = listing.get(t.path), records.get(t.path)
        if entry is None:
            todo.append(t)
        elif record is not None and shards.matches_record(store, record, entry):
            done[t.path] = record
        elif record is None and (adopted := shards.adopt(store, t.path, t.rows, t.key, entry)):
            done[t.path] = adopted.to_dict()
        else:
            why = "does not match its record" if record is not None else "is not a whole shard"
            print(f"[ncagen] {store.url(t.path)} {why} (torn or altered): rebuilding it",
                  file=log, flush=True)
            todo.append(t)
    return done, todo


def _clean_temps(store) -> None:
    """Remove the temp files a killed writer left (never a file under a final name)."""
    from .storage import TMP_SUFFIX

    for rel in store.files(""):  # shards, and the manifest or card of a killed driver
        if rel.endswith(TMP_SUFFIX):
            store.delete(rel)


def partition_summary(tasks: list[ShardTask], done: dict) -> dict:
    """Per partition: band (a mixture's: its text, the span of its bands, and its components),
    alphabet, rows and tokens per split, acceptance, seconds."""
    parts: dict = {}
    for t in tasks:
        s = done[t.path]
        p = parts.setdefault(t.config_name, {
            "band": str(t.band), "lo": t.band.lo, "hi": t.band.hi, "states": t.nca.states,
            "splits": {}, "candidates": 0, "accepted": 0, "seconds": 0.0})
        if isinstance(t.band, Mix):  # the components, by the name their rows carry
            mix = p.setdefault("mix", [{"band": str(b), "config": name, "weight": w, "rows": 0}
                                       for b, w, name in zip(t.band.bands, t.band.weights,
                                                             t.band_names())])
            for component, (_, _, rows) in zip(mix, t.components()):
                component["rows"] += rows
        sp = p["splits"].setdefault(t.split, {"rows": 0, "tokens": 0, "shards": 0})
        sp["rows"] += s["rows"]
        sp["tokens"] += s["tokens"]
        sp["shards"] += 1
        p["candidates"] += s["candidates"]
        p["accepted"] += s["accepted"]
        p["seconds"] += s.get("seconds", 0.0)
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
                     f"acceptance {p['acceptance_rate']:.1%}  {tok_rate(rate)} per worker")
    lines.append(f"  data: {out}/data/<config>/<split>-*.parquet   manifest: {out}/ncagen.json   "
                 f"card: {out}/README.md")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "python -m ncagen.build") -> int:
    """`python -m ncagen.build`: see ncagen.cli."""
    from .cli import build_main

    return build_main(sys.argv[1:] if argv is None else argv, prog)


if __name__ == "__main__":
    from .cli import exit_now

    exit_now(main())
