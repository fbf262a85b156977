"""The dataset card of a build: README.md with the Hub's YAML metadata, text and figures.

One room per job:

    scan.py      the Parquet files and footers -> statistics, cross-checked with the manifest
    render.py    statistics -> the card's text and YAML (pure, from templates/)
    figures.py   statistics -> PNG bytes (pure)
    preview.py   statistics -> the preview config's Parquet file (pure)
    __init__.py  write_card: scan, render, write; the command line

    python -m ncagen.card DIR [--repo ORG/NAME] [--no-figures] [--quick]

Exit status (as for the build): 0 done; 2 refused before anything was written (a bad repo id,
a build that is missing, incomplete, malformed or inconsistent); 1 the environment failed
(storage unreachable, permission denied, disk full).
"""

from __future__ import annotations

import sys

from .figures import (BANDS_FIGURE, FIGURES, bands_png, figure_paths, ratio_histogram_png,
                      render_figures, samples_png, trajectory_png, zipf_png)
from .preview import PREVIEW_CONFIG, PREVIEW_FILE, PreviewFile, preview_table, render_preview
from .render import (DEFAULT_CONFIG, DEFAULT_REPO, acceptance_table, band_text, card_metadata,
                     config_section, config_title, configs_table, default_config, feature_yaml,
                     layout_table, parameters_table, quantiles_table, ratio_quantiles, render_card,
                     size_category, splits_table, zipf_stats)
from .scan import (CardError, PartitionStats, SplitStats, cross_check, load_manifest,
                   parquet_files, partition_config, scan_build, scan_partition)

README = "README.md"

__all__ = [
    "BANDS_FIGURE", "FIGURES", "PREVIEW_CONFIG", "PREVIEW_FILE", "README", "DEFAULT_CONFIG",
    "DEFAULT_REPO", "CardError", "PartitionStats", "PreviewFile", "SplitStats",
    "acceptance_table", "bands_png", "band_text", "config_title", "preview_table",
    "render_preview", "trajectory_png", "card_metadata", "config_section", "configs_table",
    "cross_check", "default_config", "feature_yaml", "figure_paths", "layout_table",
    "load_manifest", "main", "parameters_table", "parquet_files", "partition_config",
    "quantiles_table", "ratio_histogram_png", "ratio_quantiles", "render_card",
    "render_figures", "samples_png", "scan_build", "scan_partition", "size_category",
    "splits_table", "write_card", "zipf_png", "zipf_stats",
]


def write_card(out_dir: str, *, figures: bool = True, repo_id: str = DEFAULT_REPO,
               quick: bool = False) -> str:
    """(Re)write DIR/README.md, the preview config's file (and DIR/figures/*.png) from the
    build's files; returns the card's path.
    `quick`: token counts from the shards' footers (the build's own card), see scan_partition."""
    from concurrent.futures import ThreadPoolExecutor

    from ..publish import check_repo_id
    from ..storage import Storage

    if repo_id != DEFAULT_REPO:  # the placeholder of a card not yet meant for a repo
        check_repo_id(repo_id)
    store = Storage(out_dir)
    manifest, parts = scan_build(out_dir, quick)
    preview_bytes, preview = render_preview(parts)
    files = {PREVIEW_FILE: preview_bytes}
    if figures:
        files.update(item for part in parts for item in render_figures(part).items())
        files[BANDS_FIGURE] = bands_png(parts, [config_title(p) for p in parts])
    with ThreadPoolExecutor(4, thread_name_prefix="ncagen-card") as writers:  # uploads overlap
        list(writers.map(lambda item: store.write_bytes(*item), files.items()))
    store.write_bytes(README, render_card(manifest, parts, repo_id=repo_id, figures=figures,
                                          preview=preview).encode())  # last: it names the rest
    return store.url(README)


def main(argv: list[str] | None = None, prog: str = "python -m ncagen.card") -> int:
    """CLI entry point; returns the exit status."""
    from ..cli import Parser, one_line
    from ..storage import StorageError, describe_error, redact

    p = Parser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("dir", metavar="DIR", help="build directory (holds ncagen.json)")
    p.add_argument("--repo", default=DEFAULT_REPO, metavar="ORG/NAME",
                   help="Hub repo id the usage examples load from")
    p.add_argument("--no-figures", action="store_true", help="write the card without figures")
    p.add_argument("--quick", action="store_true",
                   help="take token counts from the shards' footers instead of reading every "
                        "token (what the build does; a plain run re-reads and checks everything)")
    args = p.parse_args(argv)
    try:
        path = write_card(args.dir, figures=not args.no_figures, repo_id=args.repo,
                          quick=args.quick)
    except ValueError as e:
        print(f"error: {redact(one_line(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # StorageError names the file; a bare OSError is named here
        message = one_line(e) if isinstance(e, StorageError) else describe_error(e, args.dir)
        print(f"error: {redact(message)}", file=sys.stderr)
        return 1
    print(path)
    return 0
