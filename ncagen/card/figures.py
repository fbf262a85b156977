"""Drawing the card's figures: pure functions from scanned statistics to PNG bytes.

Sample trajectories are drawn with PIL (tokens.render_strip), the gzip-ratio histogram and the
token rank-frequency plot with matplotlib's Agg canvas, without a version stamp, so the same
statistics always give the same bytes. Figures live in DIR/figures/ and the card links them
relatively.
"""

from __future__ import annotations

import io

import numpy as np

from ..config import NCAConfig
from .scan import PartitionStats

FIGURES = "figures"
BANDS_FIGURE = f"{FIGURES}/bands.png"  # every config side by side
STRIP_GRIDS = 12  # grids of each shown trajectory
# Fixed axes margins (fractions of the 500 x 280 px plots), wide enough for 6-digit histogram
# counts and log-axis labels like 3x10^-2; tight_layout would fit them exactly but costs a whole
# extra layout pass per plot.
PLOT_MARGINS = {"left": 0.205, "right": 0.955, "bottom": 0.22, "top": 0.875}


def figure_paths(name: str) -> dict[str, str]:
    """Relative paths of a config's figures."""
    return {kind: f"{FIGURES}/{name}_{kind}.png" for kind in ("samples", "gzip_ratio", "zipf")}


def samples_png(part: PartitionStats) -> bytes:
    """The first grids of a config's sample rows, one strip per row, as PNG."""
    from PIL import Image

    strips = [trajectory_strip(ids, part.nca) for ids in part.samples]
    gap = 6
    width = max(s.width for s in strips)
    height = sum(s.height for s in strips) + gap * (len(strips) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    y = 0
    for s in strips:
        canvas.paste(s, (0, y))
        y += s.height + gap
    return _image_png(canvas)


def trajectory_strip(ids: np.ndarray, nca: NCAConfig, grids: int = STRIP_GRIDS, scale: int = 5):
    """The first grids of one row's input_ids (seq_len,), left to right, as a PIL image."""
    from ..tokens import decode_sequence, render_strip

    return render_strip(decode_sequence(ids, nca)[:grids], nca.states, scale=scale)


def trajectory_png(ids: np.ndarray, nca: NCAConfig) -> bytes:
    """One row's sample strip (the first STRIP_GRIDS grids) as PNG: the preview config's image."""
    return _image_png(trajectory_strip(ids, nca))


def _image_png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 2.8), dpi=100)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(**PLOT_MARGINS)
    return fig, fig.add_subplot()


def warm_up() -> None:
    """Load what drawing needs (matplotlib, its fonts, PIL) by drawing an empty figure: a build
    does it while its shards run, so its card does not wait for it."""
    import PIL.Image  # noqa: F401  (the strips' encoder)

    fig, ax = _figure()
    ax.set_title("warm-up")
    _png(fig)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp: stable bytes
    return buf.getvalue()


def ratio_histogram_png(part: PartitionStats) -> bytes:
    """Histogram of a config's gzip ratios with the band edges, as PNG."""
    fig, ax = _figure()
    lo, hi = part.band.lo, part.band.hi
    ax.hist(part.ratios.astype(np.float64), bins=np.linspace(lo, hi, 51), color="#4c72b0")
    for edge in (lo, hi):
        ax.axvline(edge, color="#c44e52", linestyle="--", linewidth=1)
    pad = 0.04 * (hi - lo)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_xlabel(f"gzip ratio of the first {part.nca.ratio_grids} grids")
    ax.set_ylabel("rows")
    ax.set_title(f"{part.name} ({part.ratios.size:,} rows)", fontsize=10)
    return _png(fig)


def zipf_png(part: PartitionStats) -> bytes:
    """Rank-frequency plot of a config's patch tokens (log-log), as PNG."""
    counts = part.token_counts[:part.nca.grid_start]
    freq = np.sort(counts[counts > 0])[::-1] / max(counts.sum(), 1)
    ranks = np.arange(1, freq.size + 1)
    fig, ax = _figure()
    ax.loglog(ranks, freq, color="#4c72b0", linewidth=1.5, label="patch tokens")
    if freq.size:
        ax.loglog(ranks, freq[0] / ranks, color="grey", linestyle=":", linewidth=1, label="1/rank")
    ax.set_xlabel("rank")
    ax.set_ylabel("frequency")
    ax.set_title(f"{part.name}: token rank-frequency", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def render_figures(part: PartitionStats) -> dict[str, bytes]:
    """Relative path -> PNG bytes of every figure of a config."""
    paths = figure_paths(part.name)
    return {paths["samples"]: samples_png(part), paths["gzip_ratio"]: ratio_histogram_png(part),
            paths["zipf"]: zipf_png(part)}


def bands_png(parts: list[PartitionStats], titles: list[str]) -> bytes:
    """The first train row of every config, one strip under the other with its title, as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height = 0.25 + 0.75 * len(parts)  # inches: a title and a strip per config
    fig = Figure(figsize=(6.4, height), dpi=100)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.3 / height, hspace=0.45)
    for ax, part, title in zip(fig.subplots(len(parts), 1, squeeze=False)[:, 0], parts, titles):
        if part.samples:
            ax.imshow(np.asarray(trajectory_strip(part.samples[0], part.nca)),
                      interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(title, fontsize=8, loc="left")
    return _png(fig)

