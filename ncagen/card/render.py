"""Rendering the card: pure functions from scanned statistics to the README's text and YAML.

The text is a template beside the package (templates/dataset_card.md for the whole card,
templates/config_section.md for each config) filled by `string.Template`; nothing here reads
a file of the build or draws a figure.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import Band, Mix, NCAConfig, parse_partition
from ..recipe import release_tag
from ..shards import PREVIEW_DIR
from ..storage import redact
from .figures import BANDS_FIGURE, STRIP_GRIDS, figure_paths
from .preview import FEATURES as PREVIEW_FEATURES
from .preview import PREVIEW_CONFIG, PreviewFile
from .scan import PartitionStats

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
DEFAULT_REPO = "<org>/nca-trajectories"
DEFAULT_CONFIG = "band_50_100"
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
ZIPF_RANKS = 1000  # the rank-frequency slope is fitted over this many top ranks
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                   (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"),
                   (1_000_000_000, "100M<n<1B"), (10_000_000_000, "1B<n<10B"))
TAGS = ("synthetic", "cellular-automata", "neural-cellular-automata", "pre-pre-training",
        "complexity", "ncagen")
PARAMETERS = {  # manifest key -> what it means, in the order the card lists them
    "states": "alphabet sizes n (cell states)",
    "bands": "gzip-ratio bands LO-HI (LO < ratio < HI)",
    "mixes": "band mixtures, each band with its weight (rows in proportion, each in its own band)",
    "grid": "grid side (cells); the grid is a torus",
    "patch": "patch side; one p x p patch is one token",
    "seq_len": "tokens per row",
    "burn_in": "steps run and discarded before the first recorded grid",
    "dt": "steps between recorded grids",
    "temperature": "temperature tau of the update",
    "identity_bias": "bias b added to the logit of the current state",
    "sims_per_rule": "trajectories drawn from each rule",
    "conv_channels": "output channels of the 3x3 convolution",
    "hidden": "width of the hidden 1x1 layer",
    "ratio_grids": "first recorded grids the gzip ratio is measured on",
    "gzip_level": "gzip compression level of the ratio",
    "zstd_level": "zstd level of the reference zstd_ratio column",
    "train_rows": "train rows per config",
    "validation_rows": "validation rows per config",
    "shard_rows": "rows per Parquet file",
    "partitions": "the configs built, when not every band at every alphabet (a release recipe)",
    "release": "release version the recipe names",
    "seed": "build seed (every rule seed derives from it)",
}


def size_category(rows: int) -> str:
    """The Hub's size_categories label for a number of rows."""
    for limit, label in SIZE_CATEGORIES:
        if rows < limit:
            return label
    return "n>10B"


def default_config(parts: list[PartitionStats]) -> str:
    """band_50_100 when the build has it, else its first config."""
    names = [p.name for p in parts]
    return DEFAULT_CONFIG if DEFAULT_CONFIG in names else names[0]


def feature_yaml(nca: NCAConfig) -> list[dict]:
    """The shard schema as `datasets` features in the card's YAML."""
    import pyarrow as pa

    from ..shards import schema

    out = []
    for f in schema(nca):
        if pa.types.is_list(f.type):
            out.append({"name": f.name, "sequence": _DTYPES[str(f.type.value_type)]})
        else:
            out.append({"name": f.name, "dtype": _DTYPES[str(f.type)]})
    return out


_DTYPES = {"int32": "int32", "int64": "int64", "float": "float32", "double": "float64",
           "string": "string"}  # Arrow type name -> datasets dtype name


def band_text(band: Band | Mix) -> str:
    """A band as LO-HI with at least one decimal on each edge: 0.5-1.0, 0.35-0.45; a mixture
    as its bands with their weights: 0.3-0.4 x1 + 0.5-1.0 x3."""
    if isinstance(band, Mix):
        return " + ".join(f"{band_text(b)} x{w:g}" for b, w in zip(band.bands, band.weights))
    return f"{_edge(band.lo)}-{_edge(band.hi)}"


def _edge(x: float) -> str:
    s = f"{x:g}"
    return s if "." in s else f"{s}.0"


def card_metadata(parts: list[PartitionStats], preview: PreviewFile | None = None) -> dict:
    """The card's YAML header: license, tags, one config per partition and its dataset_info,
    then the preview config when there is one."""
    default = default_config(parts)
    configs, infos = [], []
    for p in parts:
        files = [{"split": s, "path": f"data/{p.name}/{s}-*.parquet"} for s in p.splits]
        config = {"config_name": p.name, "data_files": files}
        if p.name == default:
            config["default"] = True
        configs.append(config)
        infos.append({
            "config_name": p.name,
            "features": feature_yaml(p.nca),
            "splits": [{"name": s, "num_bytes": st.num_bytes, "num_examples": st.rows}
                       for s, st in p.splits.items()],
            "download_size": sum(st.download_bytes for st in p.splits.values()),
            "dataset_size": sum(st.num_bytes for st in p.splits.values()),
        })
    if preview is not None:
        files = [{"split": "train", "path": f"{PREVIEW_DIR}/train-*.parquet"}]
        configs.append({"config_name": PREVIEW_CONFIG, "data_files": files})
        infos.append({
            "config_name": PREVIEW_CONFIG,
            "features": [{"name": name, "dtype": f.get("dtype", "image")}
                         for name, f in PREVIEW_FEATURES],
            "splits": [{"name": "train", "num_bytes": preview.num_bytes,
                        "num_examples": preview.rows}],
            "download_size": preview.download_bytes,
            "dataset_size": preview.num_bytes,
        })
    return {
        "license": "mit",
        "pretty_name": "NCA trajectories",
        "task_categories": ["text-generation"],
        "tags": list(TAGS),
        "size_categories": [size_category(sum(p.rows for p in parts))],
        "configs": configs,
        "dataset_info": infos,
    }


def ratio_quantiles(ratios: np.ndarray) -> dict:
    """min, the QUANTILES, max and mean of gzip ratios, as Python floats."""
    x = np.asarray(ratios, np.float64)
    if not x.size:
        return {}
    out = {"min": float(x.min())}
    out.update({f"{100 * q:g}%": float(v) for q, v in zip(QUANTILES, np.quantile(x, QUANTILES))})
    out.update(max=float(x.max()), mean=float(x.mean()))
    return out


def zipf_stats(counts: np.ndarray) -> dict:
    """Rank-frequency summary of token counts: tokens used, top token and share, fitted slope."""
    order = np.argsort(-counts, kind="stable")
    freq = counts[order]
    used = int((freq > 0).sum())
    total = int(freq.sum())
    k = min(used, ZIPF_RANKS)
    slope = float("nan")
    if k > 1:  # least squares in log-log space
        slope = float(np.polyfit(np.log(np.arange(1, k + 1)), np.log(freq[:k]), 1)[0])
    return {"used": used, "top_token": int(order[0]), "top_share": freq[0] / max(total, 1),
            "slope": slope}


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def configs_table(parts: list[PartitionStats]) -> str:
    """One line per config: band, alphabet, rows per split, tokens, acceptance, median ratio."""
    rows = [[f"`{p.name}`", band_text(p.band), p.nca.states,
             f"{p.splits['train'].rows:,}" if "train" in p.splits else 0,
             f"{p.splits['validation'].rows:,}" if "validation" in p.splits else 0,
             f"{p.tokens:,}", f"{p.acceptance_rate:.1%}",
             f"{ratio_quantiles(p.ratios).get('50%', float('nan')):.4f}"] for p in parts]
    return _table(["config", "gzip ratio band", "states", "train rows", "validation rows",
                   "tokens", "acceptance", "median gzip ratio"], rows)


def layout_table(parts: list[PartitionStats]) -> str:
    """Token ids and grid sizes per alphabet."""
    seen = {}
    for p in parts:
        seen.setdefault(p.nca.states, p.nca)
    rows = [[n, f"{c.vocab_size:,}", f"0..{c.grid_start - 1:,}", c.grid_start, c.grid_end,
             c.tokens_per_grid, c.seq_len // c.tokens_per_grid] for n, c in sorted(seen.items())]
    return _table(["states n", "vocabulary", "patch tokens", "GRID_START", "GRID_END",
                   "tokens per grid", "complete grids per row"], rows)


def parameters_table(manifest: dict) -> str:
    """Every generation parameter recorded in the manifest, with its meaning."""
    build = manifest["config"]
    cfg = {**build["nca"], **{k: v for k, v in build.items() if k != "nca"}}
    rows = []
    for key in [*PARAMETERS, *sorted(set(cfg) - set(PARAMETERS))]:
        if key in cfg:
            value = cfg[key]
            if key in ("bands", "mixes"):
                value = [band_text(parse_partition(b)) for b in value]
            elif key == "partitions":  # a recipe's (alphabet, band) pairs
                value = [f"n={n} {band_text(parse_partition(b))}" for n, b in
                         (p.split(":", 1) for p in value)]
            elif isinstance(value, dict):  # per split, e.g. shard_rows of --shard-rows auto
                value = ", ".join(f"{k} {_value_text(v)}" for k, v in value.items())
            rows.append([f"`{key}`", _value_text(value), PARAMETERS.get(key, "")])
    rows.append(["`ncagen_version`", manifest.get("ncagen_version", "unknown"),
                 "generator version"])
    return _table(["parameter", "value", "meaning"], rows)


def _value_text(value) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def splits_table(part: PartitionStats) -> str:
    """Rows, tokens and files of each split of a config."""
    rows = [[s, f"{st.rows:,}", f"{st.tokens:,}", len(st.files), f"{st.download_bytes:,}"]
            for s, st in part.splits.items()]
    return _table(["split", "rows", "tokens", "Parquet files", "bytes on disk"], rows)


def quantiles_table(ratios: np.ndarray) -> str:
    """The gzip-ratio distribution of a config as a one-row table."""
    q = ratio_quantiles(ratios)
    return _table(list(q), [[f"{v:.4f}" for v in q.values()]]) if q else "(no rows)"


def figures_markdown(part: PartitionStats) -> str:
    """The config's figures with captions, as relative image links."""
    paths, z = figure_paths(part.name), zipf_stats(part.token_counts[:part.nca.grid_start])
    shown = shown_grids(part.nca)
    edges = f"{_edge(part.band.lo)} and {_edge(part.band.hi)}"
    ranks = min(z["used"], ZIPF_RANKS)
    figures = [
        (f"sample trajectories of {part.name}", paths["samples"],
         (f"The first {shown} grids of the first {len(part.samples)} train rows "
          f"(time runs left to right, one colour per state).")),
        (f"gzip-ratio histogram of {part.name}", paths["gzip_ratio"],
         f"gzip ratio of every row; the dashed lines are the band edges {edges}."),
        (f"token rank-frequency plot of {part.name}", paths["zipf"],
         (f"Patch-token frequency against rank, log-log (delimiters left out); the dotted line "
          f"is 1/rank. Fitted slope over the top {ranks:,} ranks: {z['slope']:.2f}.")),
    ]
    return "".join(f"![{alt}]({path})\n\n*{caption}*\n\n" for alt, path, caption in figures)


def shown_grids(nca: NCAConfig) -> int:
    """How many grids a drawn trajectory shows: STRIP_GRIDS, or fewer in a short row."""
    return min(STRIP_GRIDS, nca.seq_len // nca.tokens_per_grid)


def mix_text(part: PartitionStats) -> str:
    """What a mixture's section says about its components (empty for a band)."""
    if not isinstance(part.band, Mix):
        return ""
    rows = [[f"`{name}`", band_text(band), f"{w:g}", f"{int((part.parts == k).sum()):,}"]
            for k, ((name, band), w) in enumerate(zip(part.components, part.band.weights))]
    first = part.components[0][0]
    return ("A mixture: each shard of r rows takes from each band the largest-remainder rounding "
            "of r x weight / (sum of weights) rows, interleaved evenly, and every row lies inside "
            "its own band. The `band` column names the row's band, so "
            f"`ds.filter(lambda r: r[\"band\"] == \"{first}\")` takes one back.\n\n"
            + _table(["band column", "gzip ratio band", "weight", "rows"], rows) + "\n\n")


def config_section(part: PartitionStats, repo_id: str, figures: bool) -> str:
    """The card's section about one config."""
    z = zipf_stats(part.token_counts[:part.nca.grid_start])
    return _template("config_section.md").substitute(
        name=part.name, band=band_text(part.band), states=part.nca.states, rows=f"{part.rows:,}",
        tokens=f"{part.tokens:,}", acceptance=f"{part.acceptance_rate:.1%}",
        accepted=f"{part.accepted:,}", candidates=f"{part.candidates:,}",
        vocab_size=f"{part.nca.vocab_size:,}", grid_start=part.nca.grid_start,
        grid_end=part.nca.grid_end, splits_table=splits_table(part),
        ratio_rows=f"{part.ratios.size:,}", quantiles_table=quantiles_table(part.ratios),
        used=f"{z['used']:,}", patch_tokens=f"{part.nca.grid_start:,}", top_token=z["top_token"],
        top_share=f"{z['top_share']:.1%}", figures=figures_markdown(part) if figures else "",
        mix=mix_text(part),
        repo_id=repo_id)


def render_card(manifest: dict, parts: list[PartitionStats], *, repo_id: str = DEFAULT_REPO,
                figures: bool = True, preview: PreviewFile | None = None) -> str:
    """The whole README.md of a build, from its manifest, scanned statistics and preview file."""
    import yaml

    default = next(p for p in parts if p.name == default_config(parts))
    nca = default.nca
    return _template("dataset_card.md").substitute(
        yaml=yaml.safe_dump(card_metadata(parts, preview), sort_keys=False, allow_unicode=True,
                            width=100),
        version=manifest.get("ncagen_version", __version__), config_count=len(parts),
        total_rows=f"{sum(p.rows for p in parts):,}",
        total_tokens=f"{sum(p.tokens for p in parts):,}",
        configs_table=configs_table(parts), repo_id=repo_id, default_config=default.name,
        pinned_tag=release_tag(str(manifest['release'])) if manifest.get('release') else 'v1.0',
        tokens_per_grid=nca.tokens_per_grid, patches_per_grid=nca.patches_per_grid,
        seq_len=nca.seq_len, seq_len_minus_one=nca.seq_len - 1, vocab_size=f"{nca.vocab_size:,}",
        vocab_id=nca.vocab_size,
        ratio_grids=nca.ratio_grids, zstd_level=nca.zstd_level, patch=nca.patch,
        last_cell=nca.patch * nca.patch - 1, layout_table=layout_table(parts),
        config_sections="\n".join(config_section(p, repo_id, figures) for p in parts),
        conv_channels=nca.conv_channels, hidden=nca.hidden, grid=nca.grid,
        temperature=f"{nca.temperature:g}", identity_bias=f"{nca.identity_bias:g}",
        burn_in=nca.burn_in, dt=nca.dt, gzip_level=nca.gzip_level,
        parameters_table=parameters_table(manifest),
        splits_sentence=splits_sentence(parts), preview=preview_text(parts, preview, repo_id),
        acceptance_table=acceptance_table(parts),
        bands_figure=bands_markdown(parts) if figures else "",
        command=redact(str(manifest.get("command") or "(not recorded)")),  # a hand-edited one too
        release=release_text(manifest, parts),
        transfer=(TEMPLATES / "transfer.md").read_text(encoding="utf-8").rstrip())


def release_text(manifest: dict, parts: list[PartitionStats]) -> str:
    """The card's release section: version, changelog, how long a rebuild takes."""
    release = manifest.get("release")
    lines = [f"This is release **{release}** of the dataset, built from the recipe command below."
             if release else "This build names no release version (it was not built from a "
             "release recipe)."]
    if release:
        changes = (TEMPLATES / "changelog.md").read_text(encoding="utf-8").rstrip()
        lines += ["", "Changes:", "", changes]
    wall = manifest.get("build_seconds")
    work = sum(float(s.get("seconds", 0.0)) for s in manifest.get("shards", {}).values())
    if wall:
        machine = manifest.get("machine") or {}
        where = (f" on {machine['cpus']} cores ({machine.get('cpu', 'unknown CPU')})"
                 if machine.get("cpus") else "")
        lines += ["", f"Rebuilding it: the shards took {_duration(wall)}{where}, "
                  f"{_duration(work)} of worker time in all "
                  f"({sum(p.tokens for p in parts) / max(wall, 1e-9) / 1e6:.2f}M tokens/s). "
                  f"The {len(manifest.get('shards', {}))} shards are independent, so on a Ray "
                  f"cluster the shard phase takes about that worker time divided by the cluster's "
                  f"cores (an estimate from this build, not a measurement)."]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m} min" if h else (f"{m} min {s} s" if m else f"{s} s")


def splits_sentence(parts: list[PartitionStats]) -> str:
    """What the card says about the splits every config has."""
    if all("validation" in p.splits for p in parts):
        return ("Each config has a `train` and a `validation` split; the rows of the two splits "
                "come from different random rules.")
    return "Each config has a `train` split (this build has no validation rows for some configs)."


def _template(name: str) -> string.Template:
    return string.Template((TEMPLATES / name).read_text(encoding="utf-8"))


def acceptance_table(parts: list[PartitionStats]) -> str:
    """The share of candidate trajectories each config kept: one row per alphabet, one column
    per band ("-" where the build has no such config)."""
    bands = sorted({p.band for p in parts}, key=lambda b: (b.lo, b.hi))
    cells = {(p.nca.states, p.band): f"{p.acceptance_rate:.1%}" for p in parts}
    rows = [[f"n = {n}", *(cells.get((n, b), "-") for b in bands)]
            for n in sorted({p.nca.states for p in parts})]
    return _table(["alphabet", *(band_text(b) for b in bands)], rows)


def config_title(part: PartitionStats) -> str:
    """A config's one-line label in the figure of all configs."""
    return f"{part.name}: gzip ratio {band_text(part.band)}, {part.nca.states} states"


def bands_markdown(parts: list[PartitionStats]) -> str:
    """The figure of every config side by side, with its caption."""
    return (f"![the first train row of every config]({BANDS_FIGURE})\n\n"
            f"*The first {shown_grids(parts[0].nca)} grids of the first train row of each "
            f"config, by alphabet and then band (time runs left to right).*\n\n")


def preview_text(parts: list[PartitionStats], preview: PreviewFile | None, repo_id: str) -> str:
    """What the card says about the preview config, empty when there is none."""
    if preview is None:
        return ""
    per = min(len(p.head) for p in parts)
    return (f"The `{PREVIEW_CONFIG}` config is for looking, not training: the first {per} train "
            f"rows of every config ({preview.rows:,} rows), each with a picture of its first "
            f"{shown_grids(parts[0].nca)} grids (an `image` column) beside its `band`, "
            f"`gzip_ratio`, `rule_seed`, `sim` and `states`; the dataset viewer shows it. "
            f"`load_dataset(\"{repo_id}\", \"{PREVIEW_CONFIG}\")` loads it like any config.\n")
