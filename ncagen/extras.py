"""The optional extras: what needs torch (and the training libraries), and the one-line error that
names the extra to install when it is missing.

`pip install ncagen` generates on the CPU (numba), writes the card, publishes and reads; the GPU
engine needs `ncagen[gpu]` (torch) and the training helpers `ncagen[train]` (torch,
transformers, accelerate).
"""

from __future__ import annotations

import importlib
import importlib.util


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    return importlib.util.find_spec(module) is not None


def missing(module: str, extra: str, what: str) -> MissingExtra:
    """The error for `what`, which needs `module`: install ncagen[extra]."""
    return MissingExtra(f'{what} needs {module}, which is not installed: pip install "ncagen[{extra}]"')


def require(module: str, extra: str, what: str):
    """Import and return `module`, or raise MissingExtra naming the extra that brings it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != module.split(".")[0]:
            raise  # the module is there but one of its own dependencies is not: a broken install
        raise missing(module, extra, what) from None
