"""Run the notebooks at their full setting and save them with their outputs, as committed.

    python notebooks/execute.py [01_explore ...]      (default: all four)

The kernel runs in the repository root with this checkout first on PYTHONPATH and
NCAGEN_NOTEBOOK_SMALL=0, figures at 80 dpi. 01 builds its dataset in a temporary folder, removed
afterwards, whose path is written as $NCAGEN_NOTEBOOK_DATA wherever an output shows it. Cells
carry no timing metadata, so a rerun changes only what the code prints and draws.
`tests/test_notebooks.py` re-executes the notebooks on the small setting (in memory, the files
untouched) and checks that the committed ones are executed.
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DPI = 80  # inline PNGs: sharp enough on screen, a few tens of KB a figure


def execute(path: pathlib.Path, tmp: str) -> float:
    """Execute one notebook in place at the full setting; return the seconds it took."""
    import nbclient
    import nbformat

    book = nbformat.read(path, as_version=4)
    rc = pathlib.Path(tmp, "matplotlibrc")
    rc.write_text(f"figure.dpi: {DPI}\n")  # the inline PNGs are drawn at the figure's dpi
    env = {"NCAGEN_NOTEBOOK_SMALL": "0", "NCAGEN_NOTEBOOK_DATA": os.path.join(tmp, "nca"),
           "MPLBACKEND": "module://matplotlib_inline.backend_inline", "MATPLOTLIBRC": str(rc),
           # no progress bars of `datasets`, nor tqdm's warning (with its install path) that
           # the kernel has no widgets: noise in a saved notebook
           "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "PYTHONWARNINGS": "ignore:IProgress not found",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    saved = {k: os.environ.get(k) for k in [*env, "NCAGEN_TEXT", "NCAGEN_TRANSFER_RESULTS"]}
    os.environ.update(env)
    for k in ("NCAGEN_TEXT", "NCAGEN_TRANSFER_RESULTS"):  # the committed run uses the defaults
        os.environ.pop(k, None)
    try:
        client = nbclient.NotebookClient(book, kernel_name="python3", timeout=1200,
                                         record_timing=False,
                                         resources={"metadata": {"path": str(ROOT)}})
        t0 = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - t0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    _scrub(book, env["NCAGEN_NOTEBOOK_DATA"])
    nbformat.write(book, path)
    return seconds


def _scrub(book, data_dir: str) -> None:
    """Write the temporary build folder as $NCAGEN_NOTEBOOK_DATA in every text output."""
    for cell in book.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = out["text"].replace(data_dir, "$NCAGEN_NOTEBOOK_DATA")
            for key, value in out.get("data", {}).items():
                if key.startswith("text/") and isinstance(value, str):
                    out["data"][key] = value.replace(data_dir, "$NCAGEN_NOTEBOOK_DATA")


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    with tempfile.TemporaryDirectory(prefix="ncagen-notebooks-") as tmp:
        for name in names:
            path = ROOT / "notebooks" / f"{name.removesuffix('.ipynb')}.ipynb"
            seconds = execute(path, tmp)
            print(f"{path.relative_to(ROOT)}: {seconds:.0f} s, {path.stat().st_size / 1e3:.0f} KB",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
