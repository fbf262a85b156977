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
