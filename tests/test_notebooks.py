"""Every notebook runs top to bottom (small settings) and its own assertions hold."""

import os
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_explore.ipynb", "02_complexity.ipynb", "03_pretrain.ipynb",
                                          "04_transfer.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    if path.stem == "04_transfer" and not (ROOT / "benchmarks/results/transfer_cpu.json").exists():
        pytest.skip("no recorded transfer results (tests/test_transfer.py runs it on tiny ones)")
    monkeypatch.setenv("NCAGEN_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("NCAGEN_NOTEBOOK_DATA", str(tmp_path / "nca"))  # 01 builds here
    monkeypatch.delenv("NCAGEN_TEXT", raising=False)
    monkeypatch.delenv("NCAGEN_TRANSFER_RESULTS", raising=False)  # 04 reads the recorded run
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(book, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any failure
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_executed(path):
    """The committed notebook shows its results without running anything: every code cell ran,
    in order, with no error, its figures are inline, and no temporary path leaked into it
    (`python notebooks/execute.py` after changing a notebook)."""
    book = nbformat.read(path, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    text = "".join(o.get("text", "") + "".join(v for k, v in o.get("data", {}).items()
                                               if k.startswith("text/")) for o in outputs)
    assert not [junk for junk in ("/tmp", str(ROOT), "site-packages") if junk in text]
    assert path.stat().st_size < 2_000_000
