"""The generator's fingerprint: one digest of everything that decides the rows.

A row is a pure function of (config, seeds) *and of the code that computes it*. The fingerprint
hashes the spec version and the source of every module on the data path (config, rng, rules,
rollout, kernel, jit, tokens, deflate, complexity, generate). The manifest records it, resume
refuses a build made by another generator, and compiled code (the generated kernels, and the
folder of ncagen's numba cache, `ncagen.jit`) is keyed on it, so changed code never runs stale
compiled code or mixes its rows into another generator's build.
"""

from __future__ import annotations

import functools
import hashlib
import pathlib

SPEC_VERSION = 1  # shared/NCA_SPEC.md, "generation spec (v1)"
DATA_PATH = ("config", "rng", "rules", "rollout", "kernel", "jit", "tokens", "deflate",
             "complexity", "generate")


@functools.lru_cache(maxsize=None)
def fingerprint() -> str:
    """sha256 (hex, 16 digits) of the spec version and the data path's source files."""
    here = pathlib.Path(__file__).resolve().parent
    digest = hashlib.sha256(f"ncagen-spec-{SPEC_VERSION}\n".encode())
    for name in DATA_PATH:
        source = (here / f"{name}.py").read_bytes()
        digest.update(f"{name}.py {len(source)}\n".encode())
        digest.update(source)
    return digest.hexdigest()[:16]


def describe() -> dict:
    """What the manifest records about the generator."""
    from . import __version__

    return {"spec": SPEC_VERSION, "fingerprint": fingerprint(), "ncagen": __version__}
