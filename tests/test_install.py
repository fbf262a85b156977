"""What people install: the light path (CPU build, card, publish, reading) runs with torch
unimportable, what needs torch says which extra to install, and the `ncagen` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ncagen import __version__

TINY = ["--rows", "20", "--seq-len", "380", "--executor", "local"]
# Prepended to a child's code: torch looks not installed, as after `pip install ncagen` (no spec,
# no distribution, `import torch` fails). sys.modules["torch"] = None would not do: datasets takes
# a "torch" key in sys.modules for torch imported, and imports it.
NO_TORCH = textwrap.dedent("""
    import importlib.machinery
    import sys

    class PathFinderWithoutTorch(importlib.machinery.PathFinder):
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            return None if name.partition(".")[0] == "torch" else super().find_spec(name, path, target)

        @classmethod
        def find_distributions(cls, *args, **kwargs):
            return (d for d in super().find_distributions(*args, **kwargs)
                    if (d.metadata["Name"] or "").lower() != "torch")

    sys.meta_path = [PathFinderWithoutTorch if f is importlib.machinery.PathFinder else f
                     for f in sys.meta_path]
""")


def python(repo_root, cwd, code: str, *args: str) -> subprocess.CompletedProcess:
    """`python -c code args` on this checkout, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(repo_root), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def ncagen_without_torch(repo_root, cwd, *args: str) -> subprocess.CompletedProcess:
    """`ncagen ARGS` in a process where torch cannot be imported."""
    code = NO_TORCH + "from ncagen.__main__ import main\nsys.exit(main(sys.argv[1:]))\n"
    return python(repo_root, cwd, code, *args)


def test_build_card_publish_and_read_need_no_torch(repo_root, tmp_path):
    out = tmp_path / "ds"
    res = ncagen_without_torch(repo_root, tmp_path, "build", *TINY, "--out", str(out))
    assert res.returncode == 0, res.stderr  # --device auto: the CPU engine, torch never asked for
    assert {s["device"] for s in json.loads((out / "ncagen.json").read_text())["shards"].values()} == {"cpu"}
    (out / "README.md").unlink()
    res = ncagen_without_torch(repo_root, tmp_path, "card", str(out))
    assert res.returncode == 0, res.stderr
    assert (out / "README.md").exists() and list((out / "figures").glob("*.png"))
    res = ncagen_without_torch(repo_root, tmp_path, "publish", str(out), "--repo", "org/nca",
                               "--dry-run")
    assert res.returncode == 0, res.stderr
    read = NO_TORCH + textwrap.dedent("""
        import datasets
        from ncagen.config import NCAConfig
        from ncagen.stream import nca_generator, nca_iterable_dataset

        built = datasets.load_dataset(sys.argv[1], "band_50_100", split="train")
        cfg = NCAConfig(seq_len=380)
        live = list(nca_generator([0], cfg, "0.5-1.0", rows=20, shard_rows=20))
        assert len(built) == 20 == len(live), (len(built), len(live))
        assert [r["rule_seed"] for r in live] == built["rule_seed"]
        assert [list(r["input_ids"]) for r in live] == built["input_ids"]
        again = list(nca_iterable_dataset(cfg, "0.5-1.0", rows=20))  # one shard, as built
        assert [r["rule_seed"] for r in again] == built["rule_seed"]
        print("read", len(built))
    """)
    res = python(repo_root, tmp_path, read, str(out))
    assert res.returncode == 0, res.stderr
    assert "read 20" in res.stdout


def test_what_needs_torch_names_the_extra(repo_root, tmp_path):
    for executor in ("local", "ray"):
        res = ncagen_without_torch(repo_root, tmp_path, "build", "--rows", "20", "--device", "cuda",
                                   "--executor", executor, "--out", str(tmp_path / executor))
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip().splitlines() == [
            'error: --device cuda (the torch engine) needs torch, which is not installed: '
            'pip install "ncagen[gpu]"'], res.stderr
        assert not (tmp_path / executor).exists()  # refused before anything was written
    code = NO_TORCH + textwrap.dedent("""
        from ncagen.extras import MissingExtra
        from ncagen.config import NCAConfig
        for what in ("stream", "train"):
            try:
                if what == "stream":
                    from ncagen.stream import NCAStream
                else:
                    from ncagen.train import tiny_llama
                    tiny_llama(NCAConfig())
            except MissingExtra as e:
                print(e)
    """)
    res = python(repo_root, tmp_path, code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        'ncagen.stream.NCAStream needs torch, which is not installed: pip install "ncagen[train]"',
        'tiny_llama needs torch, which is not installed: pip install "ncagen[train]"']


def test_stream_imports_torch_only_for_the_torch_dataset(repo_root, tmp_path):
    code = textwrap.dedent("""
        import sys
        import ncagen.stream
        assert "torch" not in sys.modules, "import ncagen.stream imported torch"
        from ncagen.stream import NCAStream, stream_loader
        import torch
        assert issubclass(NCAStream, torch.utils.data.IterableDataset)
        assert NCAStream.__module__ == "ncagen.torch_stream"
    """)
    pytest.importorskip("torch")
    res = python(repo_root, tmp_path, code)
    assert res.returncode == 0, res.stderr


def ncagen(repo_root, cwd, *args: str) -> subprocess.CompletedProcess:
    """`python -m ncagen ARGS` on this checkout."""
    return python(repo_root, cwd, "import runpy; runpy.run_module('ncagen', run_name='__main__')",
                  *args)


def test_console_command(repo_root, tmp_path):
    out = tmp_path / "ds"
    res = ncagen(repo_root, tmp_path, "build", *TINY, "--device", "cpu", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "built" in res.stdout
    manifest = json.loads((out / "ncagen.json").read_text())
    assert manifest["command"].startswith("ncagen build --rows 20")

    res = ncagen(repo_root, tmp_path, "--help")
    assert res.returncode == 0
    assert all(f"  {c} " in res.stdout for c in ("build", "card", "publish")), res.stdout
    res = ncagen(repo_root, tmp_path, "build", "--help")
    assert res.returncode == 0 and res.stdout.startswith("usage: ncagen build") and "--rows" in res.stdout
    res = ncagen(repo_root, tmp_path, "--version")
    assert (res.returncode, res.stdout.strip()) == (0, f"ncagen {__version__}")
    for args in (["bogus", "--rows", "1"], [], ["card"], ["build", "--rows", "inf", "--out", "x"]):
        res = ncagen(repo_root, tmp_path, *args)
        assert res.returncode == 2, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: "), res.stderr


def test_pyproject_declares_the_command_and_the_extras(repo_root):
    import importlib

    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"ncagen": "ncagen.__main__:main"}
    assert project["version"] == __version__  # one version: the package's and the command's
    module, attr = project["scripts"]["ncagen"].split(":")
    assert callable(getattr(importlib.import_module(module), attr))
    names = lambda reqs: {r.split("[")[0].split(">")[0].split("=")[0] for r in reqs}  # noqa: E731
    extras = project["optional-dependencies"]
    assert "torch" not in names(project["dependencies"])
    assert "torch" in names(extras["gpu"]) and {"torch", "transformers", "accelerate"} <= names(extras["train"])
    assert extras["test"][0] == "ncagen[gpu,train,cluster]"  # the suite needs everything
