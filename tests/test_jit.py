"""ncagen's compiled code is found by content, whatever folder the package was unpacked to.

What stands in for what: two copies of the package in two temp folders stand in for the folders
`ray job submit --working-dir .` unpacks the package to on two clusters (or two nodes); each
process here imports one copy, as a job's driver or worker does, with numba's real disk cache.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "ncagen"

# a probe's first row, then numba's own count of cache hits and misses of every cached function
GENERATE = """
import numba, sys
from ncagen import deflate, rollout, rules, tokens
from ncagen.config import Band, NCAConfig
from ncagen.generate import generate
row = next(iter(generate(NCAConfig(), Band(0.5, 1.0), 1, 1)))
hits = misses = 0
for module in (deflate, rollout, rules, tokens):
    for f in vars(module).values():
        if isinstance(f, numba.core.registry.CPUDispatcher):
            hits += sum(f.stats.cache_hits.values())
            misses += sum(f.stats.cache_misses.values())
print(rules.__file__, int(row["input_ids"].sum()), hits, misses)
"""

SMALL = """from .jit import njit


@njit
def plus(x):
    return x + {k}
"""

CALL = """
from ncagen import probe_jit
print(probe_jit.plus(1), sum(probe_jit.plus.stats.cache_hits.values()),
      sum(probe_jit.plus.stats.cache_misses.values()))
"""


def _copy(where: pathlib.Path) -> pathlib.Path:
    shutil.copytree(PACKAGE, where / "ncagen", ignore=shutil.ignore_patterns("__pycache__"))
    return where


def _run(root: pathlib.Path, code: str, **env) -> list[str]:
    """Run `code` in a new process that imports the copy of ncagen under `root`."""
    environ = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    res = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         env={**environ, "PYTHONPATH": str(root), **env}, timeout=600)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_a_copy_at_another_path_loads_the_compiled_code_of_the_first(tmp_path):
    a, b = _copy(tmp_path / "a"), _copy(tmp_path / "b")
    first = _run(a, GENERATE)
    second = _run(b, GENERATE)
    assert first[0] == str(a / "ncagen" / "rules.py") and second[0] == str(b / "ncagen" / "rules.py")
    assert first[1] == second[1]  # the same row
    hits, misses = int(second[2]), int(second[3])
    assert misses == 0 and hits >= 5, second  # sampler, initial grid, encoder, framing, sizes
    assert not list((b / "ncagen").rglob("*.nbi"))  # nothing cached beside the copy's source


def test_a_changed_source_is_compiled_again_and_numba_cache_dir_still_wins(tmp_path):
    # probe_jit.py is no module of the data path, so the generator's fingerprint does not see
    # an edit of it: the entry's key on the file's bytes is what keeps the old code out
    cache = tmp_path / "cache"
    a, b = _copy(tmp_path / "a"), _copy(tmp_path / "b")
    for root, k in ((a, 1), (b, 1)):
        (root / "ncagen" / "probe_jit.py").write_text(SMALL.format(k=k))
    env = {"NCAGEN_CACHE_DIR": str(cache)}
    assert _run(a, CALL, **env) == ["2", "0", "1"]  # compiled and saved
    assert _run(b, CALL, **env) == ["2", "1", "0"]  # the same bytes elsewhere: loaded
    (b / "ncagen" / "probe_jit.py").write_text(SMALL.format(k=2))
    assert _run(b, CALL, **env) == ["3", "0", "1"]  # edited: compiled again, not the old code
    assert len(list((cache / "numba").glob("*/probe_jit.plus-*.nbi"))) == 1

    users = tmp_path / "numba-cache"
    assert _run(a, CALL, NUMBA_CACHE_DIR=str(users), **env) == ["2", "0", "1"]
    assert list(users.rglob("probe_jit.plus-*.nbi"))  # numba placed it where the user asked


def test_every_module_compiling_with_jit_is_on_the_data_path():
    # jit decides how they are compiled and where the code is kept; the fingerprint must see it
    from ncagen.fingerprint import DATA_PATH

    users = {p.stem for p in PACKAGE.glob("*.py") if "from .jit import" in p.read_text()}
    assert {"deflate", "rollout", "rules", "tokens"} <= users
    assert users | {"jit"} <= set(DATA_PATH), users - set(DATA_PATH)
