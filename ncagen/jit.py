"""Compiled code and where it is kept: ncagen's numba functions, cached by content, not by place.

numba keeps a function's compiled code in `__pycache__` beside its source. A copy of the package
in another folder has none: `ray job submit --working-dir .` unpacks the package to a new folder
for every new Ray session and for every change anywhere in the working dir, so each such job's
driver, and the first shard on each node, compiled all of ncagen's kernels again (about 20 s on
two cores) before the first row. `njit` here caches instead under `<cache folder>/numba/
<generator fingerprint>-<numba version>/`, each entry keyed on its source file's bytes: a copy
of the same code at any path, on a machine whose cache folder holds it (an earlier run or job
there), loads it. A machine that never ran this code still compiles once. This module is on
the data path (`fingerprint.DATA_PATH`): the options it compiles with are part of the
generator.

The cache folder is `NCAGEN_CACHE_DIR`, else `~/.cache/ncagen`, else a folder of this user's
own in the temp folder; the generated rollout kernels live there too (`ncagen.kernel`). Where
the user sets NUMBA_CACHE_DIR, numba's own placement wins; where numba's cache internals are
not the ones this expects, numba's default placement is used.
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
    home = os.path.expanduser("~")  # "~" itself when there is no HOME and no passwd entry
    for d in (os.environ.get("NCAGEN_CACHE_DIR"),
              None if home.startswith("~") else os.path.join(home, ".cache", "ncagen")):
        if d and _writable(d):
            return pathlib.Path(os.path.abspath(d))
    uid = os.getuid() if hasattr(os, "getuid") else None
    d = os.path.join(tempfile.gettempdir(), f"ncagen-{uid if uid is not None else 'user'}")
    os.makedirs(d, mode=0o700, exist_ok=True)
    st = os.stat(d)
    if uid is not None and (st.st_uid != uid or st.st_mode & 0o022):
        # someone else's, or writable by others: compiled code is unpickled, so never share it
        d = tempfile.mkdtemp(prefix="ncagen-")
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


_LOCATOR = getattr(caching, "_CacheLocator", object)  # numba's (private) base of locators


class PackageLocator(_LOCATOR):
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
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    found = getattr(impl, "_locator_classes", None)
    if _LOCATOR is object or not isinstance(found, list):
        return  # another numba than 0.59-0.68 laid out: its own placement, as before
    if PackageLocator not in found:
        impl._locator_classes = [PackageLocator, *found]


_register()


def njit(*args, **options):
    """numba.njit with the disk cache on, kept as the module docstring says; nogil unless told."""
    options.setdefault("nogil", True)
    options.setdefault("cache", True)
    return numba.njit(*args, **options)
