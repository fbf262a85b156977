"""What a build is: its config, and the shards it cuts into. Pure: no Ray, no files.

Each shard's rows are a pure function of (generation config, seed, partition, split, shard
index), so the dataset does not depend on the number of workers or the order they finish; the
build, the on-the-fly stream and the Hub release all stand on this plan.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

from .config import Band, ConfigError, Mix, NCAConfig, config_name, parse_partition

SPLITS = ("train", "validation")
AUTO = "auto"  # --shard-rows auto (the default): rows per file from the split's size (auto_shard_rows)
ENDLESS_SHARD_ROWS = 100_000  # rows per shard of an endless stream (no split size to cut by)
# A split cut by `auto` has a multiple of this many files: every consumer of a 32-way streaming
# job (ranks x DataLoader workers) gets data, and split_dataset_by_node deals whole files;
# validation is read by fewer consumers (an 8-way evaluation).
MIN_FILES = {"train": 32, "validation": 8}
TARGET_FILE_BYTES = 256 * 10**6  # the largest file `auto` makes: the Hub handles 50-500 MB well
MIN_FILE_BYTES = 500_000  # the smallest: a split too small for `min_files` such files has fewer
BYTES_PER_TOKEN = 1.73  # of a shard, measured: 1.77 KB a row at seq_len 1024 (int32, zstd)
MAX_FILES = 100_000  # train or validation files a partition may have (256 MB each by `auto`: 25 TB)
MIX_TAG = 2**40 + 0x6D6978  # a mixture shard key's third part: no band's round(lo * 1e6) is it


def stream_shard_rows(shard_rows: int | None, rows: int | None, seq_len: int,
                      split: str = "train") -> int:
    """Rows per shard of a stream: `shard_rows` when given; else a build's default (`auto`) for
    a bounded stream, so `rows=N` yields the rows of `--rows N`, and ENDLESS_SHARD_ROWS for an
    endless one."""
    if shard_rows is not None:
        return shard_rows
    if rows is None:
        return ENDLESS_SHARD_ROWS
    return auto_shard_rows(rows, seq_len, MIN_FILES.get(split, 1))


def auto_shard_rows(total_rows: int, seq_len: int, min_files: int) -> int:
    """Rows per file of a split of `total_rows`: the fewest files, a multiple of `min_files`,
    that keep every file under TARGET_FILE_BYTES. Rows are rounded up, so there are exactly that
    many files, the last shorter than the others by fewer rows than there are files
    (split_dataset_by_node deals whole files only when their count divides by the consumers).
    Where so few rows make rounding up give fewer files, they are cut down instead: at least
    that many files, the last of the remainder, so every consumer still gets data.

    A split too small to give `min_files` files of MIN_FILE_BYTES (a laptop's trial build) is
    cut into fewer files of about that size instead, rows rounded up, so no file is a handful
    of rows; such a split cannot feed a 32-way streaming job whole files either way."""
    assert min_files >= 1 and seq_len >= 1
    if total_rows < 1:
        return 1
    estimate = total_rows * seq_len * BYTES_PER_TOKEN
    if estimate < min_files * MIN_FILE_BYTES:
        return math.ceil(total_rows / max(1, int(estimate // MIN_FILE_BYTES)))
    files = min_files * max(1, math.ceil(estimate / (TARGET_FILE_BYTES * min_files)))
    size = math.ceil(total_rows / files)
    if math.ceil(total_rows / size) == files:
        return size
    return max(1, total_rows // files)


@dataclass(frozen=True)
class BuildConfig:
    """A whole build: which partitions, how much of each, where, and how to run it."""

    out: str
    bands: tuple = (Band(0.5, 1.0),)
    states: tuple = (10,)
    mixes: tuple = ()  # Mix partitions, each at every alphabet beside the bands
    rows: int | None = None  # train rows per partition
    tokens: int | None = None  # or train tokens per partition
    val_rows: int | None = None
    val_fraction: float = 0.0
    shard_rows: int | str = AUTO  # or rows per file
    seed: int = 0
    nca: NCAConfig = field(default_factory=NCAConfig)
    device: str = "auto"
    executor: str = "ray"
    address: str | None = None
    workers: int | None = None
    batch: int | None = None  # candidates per rollout batch; None: by device
    overwrite: bool = False
    shared_fs: bool = False  # the user asserts a local-looking --out is shared by every node
    pairs: tuple = ()  # (states, Band) partitions, when not every band at every alphabet
    release: str | None = None  # the release version a recipe names (recorded, not content)

    def __post_init__(self) -> None:
        if (self.rows is None) == (self.tokens is None):
            raise ConfigError("give the amount per partition as exactly one of --rows or --tokens")
        if self.train_rows < 1:
            raise ConfigError(f"rows must be >= 1, got {self.train_rows}")
        if not (self.bands or self.mixes) or not self.states:
            raise ConfigError("at least one --band or --mix and one --states are needed")
        if len({m.name() for m in self.mixes}) != len(self.mixes):
            raise ConfigError("a --mix value is repeated")
        for n in self.states:
            dataclasses.replace(self.nca, states=n)  # validates every alphabet
        if self.val_rows is not None and self.val_rows < 0:
            raise ConfigError(f"val-rows must be >= 0, got {self.val_rows}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.shard_rows != AUTO and not (isinstance(self.shard_rows, int) and self.shard_rows >= 1):
            raise ConfigError(f"shard-rows must be an integer >= 1 or {AUTO}, got {self.shard_rows!r}")
        if len(set(self.pairs)) != len(self.pairs):
            raise ConfigError("a (states, band) partition is repeated")
        for n, band in self.pairs:
            if n not in self.states or band not in (*self.bands, *self.mixes):
                raise ConfigError(f"partition {n}:{band} is not among the states and bands")
        names = {}
        for n, part in self.partitions:
            name = config_name(part, dataclasses.replace(self.nca, states=n))
            if name in names:
                raise ConfigError(f"partitions {names[name]} and {part} at {n} states would both "
                                  f"be config {name}: give edges that differ at 1e-6")
            names[name] = part
        if not 0 <= self.seed < 2**64:  # keys hash it as 64 bits: a larger one would repeat one
            raise ConfigError(f"seed must be in 0 .. 2**64 - 1, got {self.seed}")
        if not self.out.strip():
            raise ConfigError("--out is empty: give the output directory or URL")
        if self.out.strip() == "-":
            raise ConfigError("--out -: a build is a directory of files, not a stream; give a "
                              "directory (./- for one named '-')")
        if self.executor not in ("ray", "local"):
            raise ConfigError(f"executor must be ray or local, got {self.executor!r}")
        if self.executor == "local" and (self.address or self.shared_fs):
            raise ConfigError(f"{'--address' if self.address else '--shared-fs'} is for Ray; "
                              f"--executor local runs every shard in this process")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.batch is not None and self.batch < 1:
            raise ConfigError(f"batch must be >= 1, got {self.batch}")
        if self.device not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:<index>, got {self.device!r}")
        for split, total in zip(SPLITS, (self.train_rows, self.validation_rows)):
            files = math.ceil(total / self.split_shard_rows(split))
            if files > MAX_FILES:
                raise ConfigError(
                    f"{total:,} {split} rows a partition would be {files:,} files, more than the "
                    f"{MAX_FILES:,} a split may have: fewer rows"
                    + (" or a larger --shard-rows" if self.shard_rows != AUTO else ""))
        if self.executor == "ray" and self.out.startswith("memory://"):
            raise ConfigError("memory:// output lives inside one process; Ray workers cannot "
                              "write to it (use --executor local, or s3://...)")

    @property
    def train_rows(self) -> int:
        return self.rows if self.rows is not None else math.ceil(self.tokens / self.nca.seq_len)

    @property
    def validation_rows(self) -> int:
        if self.val_rows is not None:
            return self.val_rows
        return round(self.train_rows * self.val_fraction)

    @property
    def partitions(self) -> tuple:
        """The (states, Band or Mix) pairs of the build, in plan order: `pairs`, else every band,
        then every mixture, at every alphabet."""
        return self.pairs or tuple((n, b) for n in self.states for b in (*self.bands, *self.mixes))

    def split_shard_rows(self, split: str) -> int:
        """Rows per file of a split (the last file may be shorter)."""
        if self.shard_rows != AUTO:
            return self.shard_rows
        total = self.train_rows if split == "train" else self.validation_rows
        return auto_shard_rows(total, self.nca.seq_len, MIN_FILES[split])

    def identity(self) -> dict:
        """What decides the dataset's content (not where or how it runs)."""
        ident = {
            "nca": {k: v for k, v in self.nca.to_dict().items() if k != "states"},
            "bands": [str(b) for b in self.bands],
            "states": list(self.states),
            "train_rows": self.train_rows,
            "validation_rows": self.validation_rows,
            "shard_rows": (self.shard_rows if self.shard_rows != AUTO
                           else {s: self.split_shard_rows(s) for s in SPLITS}),
            "seed": self.seed,
        }
        if self.mixes:  # absent otherwise: a build without mixtures keeps its identity
            ident["mixes"] = [str(m) for m in self.mixes]
        if set(self.partitions) != {(n, b) for n in self.states
                                    for b in (*self.bands, *self.mixes)}:
            ident["partitions"] = [f"{n}:{b}" for n, b in self.partitions]
        return ident


def recorded_partitions(identity: dict) -> list[tuple[int, Band | Mix]]:
    """The (states, Band or Mix) partitions of a build, from its manifest's config (`identity()`)."""
    if "partitions" in identity:
        return [(int(n), parse_partition(b))
                for n, b in (p.split(":", 1) for p in identity["partitions"])]
    return [(n, parse_partition(b)) for n in identity["states"]
            for b in (*identity["bands"], *identity.get("mixes", ()))]


@dataclass(frozen=True)
class ShardTask:
    """One shard to build: a pure description a worker can run anywhere. `band` is a Band, or a
    Mix whose `components()` are the pieces the shard is made of."""

    nca: NCAConfig
    band: Band | Mix
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

    def components(self) -> list[tuple[Band, int, int]]:
        """(band, generation key, rows) of each piece of the shard: the band itself, or every
        component of a mixture in order (see mix_counts, component_key; rows may be 0)."""
        if isinstance(self.band, Band):
            return [(self.band, self.key, self.rows)]
        return [(b, component_key(self.key, b), r)
                for b, r in zip(self.band.bands, mix_counts(self.rows, self.band.weights))]

    def band_names(self) -> list[str]:
        """The `band` column value of each component's rows: its own config name."""
        return [config_name(b, self.nca) for b, _, _ in self.components()]


def shard_key(seed: int, states: int, band: Band | Mix, split: str, index: int) -> int:
    """The generation key of shard `index` of a split: a hash of (seed, partition, split, index).
    A mixture's hashes (seed, states, MIX_TAG, its name's length and 8-byte pieces, split,
    index): never a band's key, and distinct names hash distinct sequences."""
    from .rng import derive

    if isinstance(band, Mix):
        name = band.name().encode()
        pieces = [int.from_bytes(name[i:i + 8], "big") for i in range(0, len(name), 8)]
        return int(derive(seed, states, MIX_TAG, len(name), *pieces, SPLITS.index(split), index))
    return int(derive(seed, states, round(band.lo * 1e6), round(band.hi * 1e6),
                      SPLITS.index(split), index))


def component_key(key: int, band: Band) -> int:
    """The generation key of a mixture shard's rows from `band`: a hash of (the mixture shard's
    key, the band), so of (seed, states, mixture name, band, split, shard index)."""
    from .rng import derive

    return int(derive(key, round(band.lo * 1e6), round(band.hi * 1e6)))


def mix_counts(rows: int, weights: tuple) -> list[int]:
    """Rows each component of a mixture shard of `rows` rows gets: the largest-remainder rounding
    of rows * w_k / sum(w), computed exactly (fractions), remainder ties to the earlier component."""
    from fractions import Fraction

    w = [Fraction(x) for x in weights]
    quotas = [rows * x / sum(w) for x in w]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(w)), key=lambda k: (-(quotas[k] - counts[k]), k))
    for k in by_remainder[:rows - sum(counts)]:
        counts[k] += 1
    return counts


def plan(cfg: BuildConfig) -> list[ShardTask]:
    """Every shard of the build, in a fixed order."""
    tasks = []
    for n, band in cfg.partitions:
        nca = dataclasses.replace(cfg.nca, states=n)
        for split, total in zip(SPLITS, (cfg.train_rows, cfg.validation_rows)):
            size = cfg.split_shard_rows(split)
            count = math.ceil(total / size)
            for i in range(count):
                tasks.append(ShardTask(nca, band, config_name(band, nca), split, i, count,
                                       min(size, total - i * size),
                                       shard_key(cfg.seed, n, band, split, i)))
    return tasks


def partitions(tasks: list[ShardTask]) -> dict[str, ShardTask]:
    """The first shard of each partition, by config name (where a probe of the band starts)."""
    first: dict[str, ShardTask] = {}
    for t in tasks:
        first.setdefault(t.config_name, t)
    return first
