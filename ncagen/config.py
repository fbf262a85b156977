"""Every knob of NCA data generation, as frozen dataclasses, validated in one place.

`NCAConfig` is the data contract of `shared/NCA_SPEC.md` (network, rollout, tokens, gzip
ratio); `Band` is a complexity band. Invalid user input raises `ConfigError` (a `ValueError`)
whose message names the problem; the CLI turns it into one line and exit status 2.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

INT32_MAX = 2**31 - 1
DEFAULT_STATES = 10
DEFAULT_CONV_CHANNELS = 4
DEFAULT_HIDDEN = 16
# widths beyond these only slow the generated CPU kernel (its hidden loop is written out)
MAX_CONV_CHANNELS = 64
MAX_HIDDEN = 256
# the last recorded step a rollout may reach: at the spec's network a step costs about 2 us of one
# core a candidate, so a million steps is seconds a candidate (and a typo's 10**20 is refused, not
# passed to the kernels' int64 counters)
MAX_STEPS = 10**6


class ConfigError(ValueError):
    """A configuration the generator refuses, with a message naming the problem."""



def _as_float32(x: float) -> float:
    """x rounded to float32, as the engines use it (inf where it overflows)."""
    import struct

    try:
        return struct.unpack("f", struct.pack("f", x))[0]
    except OverflowError:
        return math.inf

@dataclass(frozen=True)
class NCAConfig:
    """The generation contract: one rule network, its rollout, tokens and complexity measure."""

    states: int = DEFAULT_STATES  # alphabet size n
    grid: int = 12  # the torus is grid x grid cells
    patch: int = 2  # p x p cells make one token
    seq_len: int = 1024  # tokens per row
    burn_in: int = 10  # steps run and discarded before the first recorded grid
    dt: int = 1  # steps between recorded grids
    temperature: float = 1e-4  # tau of the update's softmax; > 0
    identity_bias: float = 0.0  # b, added to the logit of the current state
    sims_per_rule: int = 1  # trajectories drawn from each sampled rule
    conv_channels: int = DEFAULT_CONV_CHANNELS  # outputs of the 3x3 conv
    hidden: int = DEFAULT_HIDDEN  # width of the 1x1 hidden layer
    ratio_grids: int = 10  # the gzip ratio is taken over this many first recorded grids
    gzip_level: int = 9
    zstd_level: int = 3  # zstd's own default; level 19 costs ~10x more CPU for <2% smaller sizes

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for any combination the generator cannot honour."""
        for name in ("grid", "patch", "seq_len", "dt", "sims_per_rule", "conv_channels",
                     "hidden", "ratio_grids"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, "
                                  f"got {getattr(self, name)!r}")
        for name, top in (("conv_channels", MAX_CONV_CHANNELS), ("hidden", MAX_HIDDEN)):
            if getattr(self, name) > top:
                raise ConfigError(f"{name.replace('_', '-')} must be <= {top}, "
                                  f"got {getattr(self, name)}")
        if not isinstance(self.states, int) or self.states < 2:
            raise ConfigError(f"states must be an integer >= 2, got {self.states!r}")
        if self.states > 255:
            raise ConfigError(f"states must be <= 255 (cells are stored as bytes), got {self.states}")
        if not isinstance(self.burn_in, int) or self.burn_in < 0:
            raise ConfigError(f"burn-in must be an integer >= 0, got {self.burn_in!r}")
        if self.sims_per_rule > INT32_MAX:
            raise ConfigError(f"sims-per-rule must be <= {INT32_MAX} (the sim column is int32), "
                              f"got {self.sims_per_rule}")
        # both are used as float32: a value that is 0 or overflows there is refused here
        if not (self.temperature > 0 and math.isfinite(self.temperature)
                and 0 < _as_float32(self.temperature) < math.inf):
            raise ConfigError(f"temperature must be > 0 and within float32's range "
                              f"(about 1e-45 .. 3e38), got {self.temperature!r}")
        if not (math.isfinite(self.identity_bias) and math.isfinite(_as_float32(self.identity_bias))):
            raise ConfigError(f"identity-bias must be finite in float32 (|b| < 3e38), "
                              f"got {self.identity_bias!r}")
        if self.grid % self.patch:
            raise ConfigError(f"patch {self.patch} does not divide grid {self.grid}")
        if self.vocab_size > INT32_MAX:
            raise ConfigError(
                f"vocabulary {self.states}**{self.patch * self.patch} + 2 = {self.vocab_size} "
                f"does not fit the int32 token type")
        if self.seq_len < self.tokens_per_grid:
            raise ConfigError(f"seq-len {self.seq_len} is too short for one grid "
                              f"({self.tokens_per_grid} tokens)")
        if self.seq_len < self.ratio_grids * self.tokens_per_grid:
            raise ConfigError(
                f"seq-len {self.seq_len} cannot hold the first {self.ratio_grids} grids that the "
                f"gzip ratio is computed on ({self.ratio_grids * self.tokens_per_grid} tokens)")
        last = self.record_time(self.grids_per_sequence - 1)
        if last > MAX_STEPS:
            raise ConfigError(
                f"a row's last grid would be step {last} (burn-in {self.burn_in} + dt {self.dt} x "
                f"{self.grids_per_sequence - 1}, for {self.grids_per_sequence} grids a row), "
                f"beyond the {MAX_STEPS:,} a rollout may run: a smaller --burn-in, --dt or --seq-len")
        if not 1 <= self.gzip_level <= 9:
            raise ConfigError(f"gzip level must be in 1..9, got {self.gzip_level}")
        if not 1 <= self.zstd_level <= 22:
            raise ConfigError(f"zstd level must be in 1..22, got {self.zstd_level}")

    @property
    def patches_per_grid(self) -> int:
        """Patch tokens in one grid, delimiters excluded."""
        return (self.grid // self.patch) ** 2

    @property
    def tokens_per_grid(self) -> int:
        """Tokens one grid takes in a sequence: GRID_START, its patches, GRID_END."""
        return self.patches_per_grid + 2

    @property
    def grid_start(self) -> int:
        return self.states ** (self.patch * self.patch)

    @property
    def grid_end(self) -> int:
        return self.grid_start + 1

    @property
    def vocab_size(self) -> int:
        return self.states ** (self.patch * self.patch) + 2

    @property
    def grids_per_sequence(self) -> int:
        """Recorded grids a sequence needs (the last one may be cut short)."""
        return -(-self.seq_len // self.tokens_per_grid)

    def record_time(self, k: int) -> int:
        """Step index t of the k-th recorded grid s_t."""
        return self.burn_in + k * self.dt

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_BAND_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*-\s*(\d+(?:\.\d*)?|\.\d+)\s*$")


@dataclass(frozen=True, order=True)
class Band:
    """A complexity band: rows with lo < gzip_ratio < hi (both strict) are kept."""

    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.lo < self.hi <= 1.0):
            raise ConfigError(f"band {self.lo}-{self.hi} must satisfy 0 <= LO < HI <= 1")

    @classmethod
    def parse(cls, text: str) -> "Band":
        """Parse 'LO-HI', e.g. '0.5-1.0'."""
        m = _BAND_RE.match(text)
        if not m:
            raise ConfigError(f"band {text!r} is not of the form LO-HI, e.g. 0.5-1.0")
        lo, hi = float(m.group(1)), float(m.group(2))
        if any(round(x * 1e6) / 1e6 != x for x in (lo, hi)):  # names and keys round to 1e-6
            raise ConfigError(f"band {text.strip()!r}: give its edges to at most 6 decimal places "
                              f"(a config's name and keys hold them to 1e-6)")
        return cls(lo, hi)

    def mask(self, ratios):
        """Which ratios lie inside the band: THE definition, used by the generator, the card
        and every helper. Ratios are compared as float32, as stored, with both edges rounded to
        float32 (so 432/1440, which is float32(0.3), is not inside 0.3-0.4)."""
        import numpy as np

        r = np.asarray(ratios, np.float32)
        return (r > np.float32(self.lo)) & (r < np.float32(self.hi))

    def contains(self, ratio: float) -> bool:
        """Whether one ratio lies inside the band (see `mask`)."""
        return bool(self.mask(ratio))

    def name(self, states: int = DEFAULT_STATES, conv_channels: int = DEFAULT_CONV_CHANNELS,
             hidden: int = DEFAULT_HIDDEN) -> str:
        """The config name of this band at an alphabet size and network width: band_30_40,
        band_50_100_states_15, band_50_100_c8_h32."""
        return f"band_{_pct(self.lo)}_{_pct(self.hi)}" + suffix(states, conv_channels, hidden)

    def __str__(self) -> str:
        return f"{self.lo:g}-{self.hi:g}"


def _pct(x: float) -> str:
    return f"{round(100 * x, 6):g}"


def suffix(states: int, conv_channels: int, hidden: int) -> str:
    """What a config name adds for a non-default alphabet or network: _states_15, _c8_h32."""
    out = "" if states == DEFAULT_STATES else f"_states_{states}"
    if (conv_channels, hidden) != (DEFAULT_CONV_CHANNELS, DEFAULT_HIDDEN):
        out += f"_c{conv_channels}_h{hidden}"
    return out


def config_name(part, nca: NCAConfig) -> str:
    """The config name of a partition (a Band or a Mix) built with `nca`."""
    return part.name(nca.states, nca.conv_channels, nca.hidden)


@dataclass(frozen=True)
class Mix:
    """A mixture of bands: a partition whose rows come from each component band in proportion
    to its weight, every row inside its own band (see `plan.mix_counts` for the exact rule)."""

    bands: tuple  # (Band, ...), distinct, in the order given
    weights: tuple  # (float, ...), positive, one per band

    def __post_init__(self) -> None:
        if len(self.bands) != len(self.weights):
            raise ConfigError("a mixture needs one weight per band")
        if len(set(self.bands)) < 2 or len(set(self.bands)) != len(self.bands):
            raise ConfigError(f"mixture {self}: needs at least two distinct bands, none repeated")
        for w in self.weights:
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not (
                    math.isfinite(w) and w > 0):
                raise ConfigError(f"mixture {self}: weights must be positive numbers, got {w!r}")

    @classmethod
    def parse(cls, text: str) -> "Mix":
        """Parse 'LO-HI:W,LO-HI:W,...', e.g. '0.3-0.4:1,0.5-1.0:3'."""
        bands, weights = [], []
        for item in text.split(","):
            band, sep, weight = item.rpartition(":")
            if not sep:
                raise ConfigError(f"mixture {text!r}: {item.strip()!r} is not LO-HI:WEIGHT, "
                                  f"e.g. 0.3-0.4:1,0.5-1.0:1")
            try:
                w = float(weight)
            except ValueError:
                raise ConfigError(f"mixture {text!r}: weight {weight.strip()!r} is not a number") from None
            bands.append(Band.parse(band))
            weights.append(int(w) if w.is_integer() else w)
        return cls(tuple(bands), tuple(weights))

    @property
    def lo(self) -> float:
        return min(b.lo for b in self.bands)

    @property
    def hi(self) -> float:
        return max(b.hi for b in self.bands)

    @property
    def equal(self) -> bool:
        return len(set(self.weights)) == 1

    def name(self, states: int = DEFAULT_STATES, conv_channels: int = DEFAULT_CONV_CHANNELS,
             hidden: int = DEFAULT_HIDDEN) -> str:
        """mix_30_40_50_100 (equal weights), mix_30_40x1_50_100x3 (weights named otherwise),
        with the suffixes of `Band.name`."""
        parts = [f"{_pct(b.lo)}_{_pct(b.hi)}" + ("" if self.equal else "x" + _num(w).replace(".", "p"))
                 for b, w in zip(self.bands, self.weights)]
        return "mix_" + "_".join(parts) + suffix(states, conv_channels, hidden)

    def __str__(self) -> str:
        return ",".join(f"{b}:{_num(w)}" for b, w in zip(self.bands, self.weights))


def _num(w: int | float) -> str:
    """A weight as text that parses back to the same number: 1, 0.5, 0.3333333333333333."""
    return str(w) if isinstance(w, int) else repr(float(w))


def parse_partition(text: str):
    """A recorded partition: 'LO-HI' (a Band) or 'LO-HI:W,...' (a Mix)."""
    return Mix.parse(text) if ":" in text else Band.parse(text)


PAPER_BANDS = (Band(0.2, 0.3), Band(0.3, 0.4), Band(0.4, 0.5), Band(0.5, 1.0))
