"""Compiled code and where it is kept: ncagen's numba functions, cached by content, not by path.

numba keeps a function's compiled code beside its source (`__pycache__`), under a name tied to
that source's folder. `ray job submit --working-dir .` unpacks the package to a new folder on
every cluster, so each job's driver, and the first worker of every node, compiled all of
ncagen's kernels again (about 20 s on two cores) before the first row. `njit` here caches
instead under `<cache folder>/numba/<generator fingerprint>-<numba version>/`, with each entry
keyed on its source file's bytes: any copy of the same code, at any path, finds it, and changed
code never loads another generator's compiled code (the fingerprint keys the folder; numba
keys each entry on the signature and the CPU).

The cache folder is `NCAGEN_CACHE_DIR`, else `~/.cache/ncagen`, else one in the temp folder; the
generated rollout kernels live there too (`ncagen.kernel`). Where the user sets
NUMBA_CACHE_DIR, numba's own placement wins. Importing this module imports numba.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import tempfile

import numba
from numba.core import caching

PACKAGE = pathlib.Path(__file__).resolve().parent


def cache_dir() -> pathlib.Path:
    """Where generated kernel sources and compiled code are kept (see the module docstring)."""
    for d in (os.environ.get("NCAGEN_CACHE_DIR"), os.path.join(os.path.expanduser("~"), ".cache", "ncagen")):
        if d and _writable(d):
            return pathlib.Path(d)
    d = os.path.join(tempfile.gettempdir(), f"ncagen-{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    os.makedirs(d, exist_ok=True)
    return pathlib.Path(d)


def _writable(d: str) -> bool:
    try:
        os.makedirs(d, exist_ok=True)
    except OSError:
        return False
    return os.access(d, os.W_OK)


@functools.lru_cache(maxsize=None)
def _content_digest(path: str, mtime_ns: int, size: int) -> str:
    """sha256 of a source file (mtime and size in the key: an edited file is hashed again)."""
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


class PackageLocator(caching._CacheLocator):
    """numba's cache locator for functions defined in ncagen's own modules (none other)."""

    def __init__(self, py_func, py_file: str):
        from .fingerprint import fingerprint

        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._path = str(cache_dir() / "numba" / f"{fingerprint()}-{numba.__version__}")

    def get_cache_path(self) -> str:
        return self._path

    def get_source_stamp(self) -> str:
        st = os.stat(self._py_file)
        return _content_digest(self._py_file, st.st_mtime_ns, st.st_size)

    def get_disambiguator(self) -> str:
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file: str):
        if numba.config.CACHE_DIR:  # the user's NUMBA_CACHE_DIR: numba's own locator places it
            return None
        try:
            if pathlib.Path(py_file).resolve().parent != PACKAGE:
                return None
            self = cls(py_func, py_file)
            self.ensure_cache_path()
        except OSError:  # no writable folder: numba's own locators decide, as before
            return None
        return self


def _register() -> None:
    """Ask numba to try PackageLocator first (it declines every file outside this package)."""
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl")
    if PackageLocator not in impl._locator_classes:
        impl._locator_classes = [PackageLocator, *impl._locator_classes]


_register()


def njit(*args, **options):
    """numba.njit with the disk cache on, kept as the module docstring says; nogil unless told."""
    options.setdefault("nogil", True)
    return numba.njit(*args, cache=True, **options)
