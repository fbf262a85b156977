"""benchmarks/transfer.py (issue 12) on its tiny setting: every arm trains, the JSON holds what
the notebook reads, and notebooks/04_transfer.ipynb plots it."""

import importlib.util
import json
import math
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("transformers")

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARMS = ["scratch", "nca_30_40", "nca_50_100", "nca_mix", "code_warmup"]


def load_script():
    spec = importlib.util.spec_from_file_location("transfer", ROOT / "benchmarks" / "transfer.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["transfer"] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The tiny setting over two seeds, through the script's command line in a process of its own
    (about 15 s on two idle cores)."""
    out = tmp_path_factory.mktemp("transfer") / "results.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "transfer.py"), "--setting",
                           "tiny", "--seeds", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| scratch |" in proc.stdout
    return out, json.loads(out.read_text())


def test_every_arm_and_seed_is_there(results):
    _, r = results
    assert r["arms"] == ARMS and r["seeds"] == [0, 1]
    assert sorted((x["arm"], x["seed"]) for x in r["runs"]) == sorted((a, s) for a in ARMS for s in (0, 1))
    assert list(r["summary"]) == ARMS
    for a in r["summary"].values():
        assert len(a["steps_to_scratch_final"]) == 2
        assert len(a["mean"]) == len(a["min"]) == len(a["max"]) == len(a["std"]) == len(a["steps"])


def test_losses_finite_and_held_out_loss_falls(results):
    _, r = results
    steps = r["config"]["stage2_steps"]
    for run in r["runs"]:
        assert len(run["stage2_loss"]) == steps
        assert len(run["stage1_loss"]) == (0 if run["arm"] == "scratch" else r["config"]["stage1_steps"])
        held = [run["held_out"][str(k)] for k in sorted(map(int, run["held_out"]))]
        assert all(math.isfinite(x) for x in run["stage1_loss"] + run["stage2_loss"] + held)
        assert held[-1] < held[0] - 0.5, (run["arm"], run["seed"], held)
    for arm in r["summary"].values():  # scratch reaches its own final loss by its last step
        assert all(math.isfinite(x) for x in arm["mean"])
    assert all(s is not None and s <= steps for s in r["summary"]["scratch"]["steps_to_scratch_final"])


def test_the_split_is_by_file_and_fixed():
    import sysconfig

    t = load_script()
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    files = [p.relative_to(root).as_posix() for p in t.stdlib_files()]
    assert files == sorted(files) and all(f.endswith(".py") and "site-packages" not in f for f in files)
    held = [f for f in files if t.is_held_out(f)]
    assert 0.05 < len(held) / len(files) < 0.15
    corpus = t.load_corpus(max_files=50)
    assert corpus["train"].max() <= t.SEPARATOR and (corpus["train"] == t.SEPARATOR).any()
    assert len(corpus["held_out"]) > 0


def test_the_notebook_plots_the_results(results, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    out, _ = results
    monkeypatch.setenv("NCAGEN_TRANSFER_RESULTS", str(out))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    book = nbformat.read(ROOT / "notebooks" / "04_transfer.ipynb", as_version=4)
    nbclient.NotebookClient(book, kernel_name="python3", timeout=120,
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "".join(o.get("text", "") for c in book.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "| scratch |" in text and "setting tiny" in text


def test_the_card_cites_the_recorded_cpu_run():
    """The card's transfer paragraph (ncagen/templates/transfer.md) quotes the committed run's
    final losses: rerunning the benchmark into the JSON without updating the card fails here."""
    recorded = json.loads((ROOT / "benchmarks/results/transfer_cpu.json").read_text())
    text = " ".join((ROOT / "ncagen/templates/transfer.md").read_text().split())
    said = {"scratch": "scratch", "nca_30_40": "after band 0.3-0.4",
            "nca_mix": "after a 50/50 mixture of 0.3-0.4 and 0.5-1.0",
            "nca_50_100": "after band 0.5-1.0", "code_warmup": "after a compute-matched warm-up on the code itself"}
    for arm, words in said.items():
        s = recorded["summary"][arm]
        assert f"{words} {s['mean'][-1]:.3f} ({s['std'][-1]:.3f})" in text, arm
    cfg = recorded["config"]
    assert f"{cfg['layers']}-layer, {cfg['hidden']}-wide" in text
    assert f"for {cfg['stage1_steps']} steps" in text and f"for {cfg['stage2_steps']} steps" in text
    assert f"over {len(recorded['seeds'])} seeds" in text
