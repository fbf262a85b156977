"""Where a build lives: a local directory or an object-store URL, behind one small interface.

Every byte ncagen writes goes through `Storage.atomic_write`, so a file under its final name is
always whole:
- on a local (or network-mounted) filesystem the bytes go to a temporary name in the same
  folder, are fsynced, and renamed into place (then the folder is fsynced);
- on an object store (s3://, gs://, ...) an object becomes visible only when its upload
  completes, but a stream that is closed after an error would still publish what it had, so
  the bytes are first spooled to a local temporary file and uploaded whole, then the object's
  size is checked.
Either way the writer hands back the size and sha256 of what it wrote, so a shard's checksum is
computed once, while it is written, and never by reading it back.

Failures of the environment (disk full, permission denied, storage unreachable) surface as
`StorageError`, whose message is one line naming the path, the cause and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import posixpath
import re
import tempfile
import uuid
from dataclasses import dataclass
from typing import Iterator

TMP_SUFFIX = ".tmp"
_CHUNK = 1 << 22
RESUME_HINT = "rerun the same command to resume"


class StorageError(OSError):
    """The build's storage failed (not the user's input); one line, no traceback."""


class StorageRefused(ValueError):
    """An output URL that cannot be used as given (a missing filesystem package); found before
    anything is written."""


# user:password@ up to the last @ of the URL (a secret may hold / or @), or user@ alone
_USER_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s/@:]*:\S*@")
_USER = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]*@")
# a URL's query parameter that may carry a secret (s3://b/x?secret_key=...&session_token=...)
_SECRET_QUERY = re.compile(r"([?&][^=&#\s]*(?:secret|key|token|passw|signature|credential|auth)"
                           r"[^=&#\s]*=)[^&#\s]*", re.IGNORECASE)
GCS_RETRY_SECONDS = 30  # how long gs:// retries an unreachable service before it fails


def redact(text: str) -> str:
    """`text` with the user:password part of every URL in it replaced by ***, and the value of
    every query parameter whose name suggests a secret (access_key, secret_key, session_token,
    ...): credentials in an --out URL (s3://KEY:SECRET@bucket/...) are never printed or
    recorded. Where it cannot tell a secret from a port and path (http://host:9/a@b) it hides
    both."""
    text = _USER.sub(r"\1***@", _USER_PASSWORD.sub(r"\1***@", text))
    return _SECRET_QUERY.sub(r"\1***", text)


@dataclass(frozen=True)
class Written:
    """What an atomic write put under its final name."""

    bytes: int
    sha256: str
    mtime_ns: int


@dataclass(frozen=True)
class Entry:
    """One file as a listing shows it."""

    bytes: int
    mtime_ns: int


def filesystem(root: str):
    """A pyarrow filesystem and the path of `root` inside it (local paths, s3://, fsspec URLs)."""
    import pyarrow as pa
    from pyarrow import fs

    if "://" not in root or root.startswith("file://"):
        path = root[len("file://"):] if root.startswith("file://") else root
        return fs.LocalFileSystem(), os.path.abspath(path)
    check_bucket(root)
    given, uri = root, root
    if root.split("://", 1)[0].lower() in ("gs", "gcs") and "retry_limit_seconds=" not in root:
        # pyarrow's default retries an unreachable service for 15 minutes
        uri += ("&" if "?" in root else "?") + f"retry_limit_seconds={GCS_RETRY_SECONDS}"
    try:
        fsys, path = fs.FileSystem.from_uri(uri)
        if isinstance(fsys, fs.PyFileSystem) and isinstance(fsys.handler, fs.FSSpecHandler):
            fsys = fs.PyFileSystem(fs.FSSpecHandler(_Guarded(fsys.handler.fs)))  # fsspec's
        return fsys, path
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        if isinstance(err, pa.ArrowInvalid) and str(err).startswith(_UNKNOWN_OPTION):
            # a scheme pyarrow serves itself (s3, gs, abfs) with an option its client lacks:
            # fsspec would ask for its own package and then read the query as part of a key
            message = _first_line(err).replace(uri, given)
            raise StorageRefused(f"{redact(given)}: {redact(message)}") from None
        import fsspec

        try:
            fsys, path = fsspec.core.url_to_fs(root)
        except (ImportError, ValueError) as err:  # the package a scheme needs; an unknown one
            message = " ".join(str(err).split()).replace(uri, given)
            raise StorageRefused(f"{redact(given)}: {redact(message)}") from None
        return fs.PyFileSystem(fs.FSSpecHandler(_Guarded(fsys))), path.rstrip("/")
    except OSError as err:  # the client could not start (hdfs without a JVM lists every path
        # it tried) or reach its service (s3's region lookup): its first line
        text = _first_line(err.strerror or err).replace(uri, given)
        raise (OSError(err.errno, text) if err.errno else OSError(text)) from None


_UNKNOWN_OPTION = "Unexpected query parameter"  # pyarrow's ArrowInvalid for one of them


def _first_line(err: BaseException | str) -> str:
    lines = str(err).strip().splitlines()
    return " ".join(lines[0].split()) if lines else type(err).__name__


BUCKET_SCHEMES = ("s3", "s3a", "gs", "gcs")  # object stores whose URL starts with a bucket


def bucket(root: str) -> str:
    """The bucket an object-store URL names ('' if none): the URL's authority, up to the first
    / or ?, without the credentials before its last @ (a secret holding / or ? must be
    percent-encoded there, as in any URL)."""
    authority = root.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    return authority.rpartition("@")[2]


def check_bucket(root: str) -> None:
    """StorageRefused for an object-store URL that names no bucket (s3:// or s3:///x): its
    client would fail at the first write, or ask for a package it does not need."""
    if scheme(root) in BUCKET_SCHEMES and not bucket(root):
        raise StorageRefused(f"{redact(root)} names no bucket: give {scheme(root)}://BUCKET/PREFIX")


def _guarded(call):
    """`call`, raising OSError for a filesystem client's own failures (an HTTP client's
    connection error is not an OSError); OSError, ValueError (a malformed URL or path) and
    programming errors pass unchanged."""
    @functools.wraps(call)
    def guarded(*args, **kwargs):
        try:
            return call(*args, **kwargs)
        except (OSError, ValueError, *_BUGS):
            raise
        except Exception as err:  # noqa: BLE001 - any client's failure
            raise OSError(f"{type(err).__name__}: {' '.join(str(err).split())}") from err
    return guarded


class _Guarded:
    """An fsspec filesystem, or a file it opened, whose methods raise OSError for its client's
    own failures, so that every caller's one-line handling of storage errors (the build's, the
    card's, publish's) sees them; files it opens are guarded too. Attributes pass through."""

    def __init__(self, target):
        self._target = target

    def __getattr__(self, name: str):
        if name == "_target":  # not set yet (copying, unpickling)
            raise AttributeError(name)
        value = getattr(self._target, name)
        return _guarded(value) if callable(value) else value

    def open(self, *args, **kwargs):
        return _Guarded(_guarded(self._target.open)(*args, **kwargs))

    def __eq__(self, other) -> bool:
        return isinstance(other, _Guarded) and self._target == other._target

    def __hash__(self) -> int:
        return hash(self._target)

    def __reduce__(self):
        return _Guarded, (self._target,)


def is_url(root: str) -> bool:
    """Whether `root` names an object store or another non-local filesystem."""
    return "://" in root and not root.startswith("file://")


def scheme(root: str) -> str:
    """'s3', 'gs', 'memory', ... or 'file' for a local path; fsspec+s3:// (pyarrow's name for
    a scheme fsspec serves) is s3 too."""
    return root.split("://", 1)[0].lower().removeprefix("fsspec+") if is_url(root) else "file"


def describe_error(err: BaseException, where: str) -> str:
    """One line for an environment failure at `where`, with the fix."""
    code = getattr(err, "errno", None)
    text = redact(" ".join(str(err).split()) or type(err).__name__)
    where = redact(where)
    if code == errno.ENOSPC or "No space left" in text:
        return f"no space left on the device of {where}: free space and {RESUME_HINT}"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) or "ermission denied" in text \
            or "Read-only file system" in text or "Operation not permitted" in text:
        return f"permission denied writing {where} ({text}); fix its permissions and {RESUME_HINT}"
    if "Bucket" in text and "not found" in text:
        return f"the bucket of {where} does not exist: create it (or fix the name) and rerun"
    if "AWS Error" in text or "curl" in text.lower() or "NETWORK_CONNECTION" in text \
            or "Could not connect" in text or "onnection refused" in text:
        return (f"storage unreachable or refusing requests at {where} ({text[:200]}); check the "
                f"endpoint and credentials, then {RESUME_HINT}")
    return f"storage error at {where}: {text[:300]}; {RESUME_HINT}"


_BUGS = (TypeError, AttributeError, KeyError, IndexError, NameError, AssertionError,
         NotImplementedError, RecursionError, MemoryError, ArithmeticError)  # keep their traceback


@contextlib.contextmanager
def storage_errors(where: str, clients: bool = True) -> Iterator[None]:
    """Turn OSErrors (pyarrow's included) raised inside into StorageError naming `where`; with
    `clients`, the failures of other filesystems' clients too (fsspec's: an HTTP client's
    connection error is not an OSError). Only around storage calls: a caller's own errors
    (a shard's generation inside an atomic write) must keep their type."""
    try:
        yield
    except (StorageError, StorageRefused):
        raise
    except (OSError, IOError) as err:  # ArrowIOError is an OSError too
        if isinstance(err, (FileNotFoundError, FileExistsError)):
            raise
        raise StorageError(describe_error(err, where)) from err
    except _BUGS:
        raise
    except Exception as err:  # noqa: BLE001
        if not clients:
            raise
        raise StorageError(describe_error(err, where)) from err


class _Hashing:
    """A binary sink that hashes and counts what passes through it to `sink`."""

    def __init__(self, sink):
        self.sink, self.digest, self.size, self.closed = sink, hashlib.sha256(), 0, False
        self.written: Written | None = None  # set when the atomic write has completed
        self.publish = lambda: self.written  # a deferred write: makes it appear, returns Written

    def write(self, data) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.size += view.nbytes
        self.sink.write(view)
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.sink.flush()

    def writable(self) -> bool:
        return True

    def close(self) -> None:  # the storage closes the real sink; pyarrow may call this early
        self.closed = True


class Storage:
    """A build directory: `root` is a local path or a URL; paths below are relative, POSIX."""

    def __init__(self, root: str):
        self.root = root
        self.local = not is_url(root)
        self.fs, self.base = filesystem(root)

    def path(self, rel: str) -> str:
        return posixpath.join(self.base, rel) if rel else self.base

    def url(self, rel: str = "") -> str:
        """The user-facing name of a file of the build (no credentials a URL carried)."""
        if self.local:
            return os.path.join(self.base, rel) if rel else self.base
        root = redact(self.root)
        return f"{root.rstrip('/')}/{rel}" if rel else root

    # reading ---------------------------------------------------------------------------------
    def kind(self, rel: str = "") -> str:
        """'file', 'dir' or 'missing'."""
        from pyarrow import fs

        with storage_errors(self.url(rel)):
            t = self.fs.get_file_info(self.path(rel)).type
        return {fs.FileType.File: "file", fs.FileType.Directory: "dir"}.get(t, "missing")

    def listdir(self, rel: str = "") -> list[str]:
        """Names directly under `rel` (empty when it does not exist)."""
        from pyarrow import fs

        with storage_errors(self.url(rel)):
            infos = self.fs.get_file_info(fs.FileSelector(self.path(rel), allow_not_found=True))
        return sorted(posixpath.basename(i.path) for i in infos)

    def files(self, rel: str) -> dict[str, Entry]:
        """Every file under `rel`, recursively: relative path -> Entry (one listing, no reads)."""
        from pyarrow import fs

        with storage_errors(self.url(rel)):
            infos = self.fs.get_file_info(fs.FileSelector(self.path(rel), recursive=True,
                                                          allow_not_found=True))
        out = {}
        for i in infos:
            if i.type == fs.FileType.File:
                out[posixpath.relpath(i.path, self.base)] = Entry(int(i.size), int(i.mtime_ns or 0))
        return out

    def entry(self, rel: str) -> Entry | None:
        from pyarrow import fs

        with storage_errors(self.url(rel)):
            i = self.fs.get_file_info(self.path(rel))
        return Entry(int(i.size), int(i.mtime_ns or 0)) if i.type == fs.FileType.File else None

    def read_bytes(self, rel: str) -> bytes:
        with storage_errors(self.url(rel)), self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def read_json(self, rel: str) -> dict | None:
        """A JSON file of the build, or None when it does not exist; ValueError naming the file
        when it is not JSON."""
        try:
            data = self.read_bytes(rel)
        except FileNotFoundError:
            return None
        try:
            return json.loads(data.decode())
        except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
            raise ValueError(f"{self.url(rel)} is not a readable JSON file ({err})") from None

    def sha256(self, rel: str) -> tuple[int, str]:
        """(size, sha256) of a file, read through once."""
        digest, size = hashlib.sha256(), 0
        with storage_errors(self.url(rel)), self.fs.open_input_stream(self.path(rel)) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()

    def open_input(self, rel: str):
        """A random-access file (for Parquet footers)."""
        with storage_errors(self.url(rel)):
            return self.fs.open_input_file(self.path(rel))

    # writing ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def atomic_write(self, rel: str, defer: bool = False) -> Iterator[_Hashing]:
        """Yield a binary sink; on a clean exit its bytes appear whole under `rel`.

        After the block, `sink.written` is the Written record. On an exception nothing appears
        under `rel` (a previous file there is left as it was). With `defer` on an object store the
        bytes wait in the local spool until `sink.publish()` uploads them (and returns the
        record), so a caller can go on with other work meanwhile; locally it changes nothing.
        """
        with storage_errors(self.url(rel), clients=False):  # the block is the caller's code
            if self.local:
                with self._local_write(rel) as sink:
                    yield sink
                return
            spool = tempfile.TemporaryFile(prefix="ncagen-spool-")
            sink = _Hashing(spool)
            try:
                yield sink
                spool.flush()
            except BaseException:
                spool.close()
                raise
        sink.publish = lambda: self._upload(rel, spool, sink)
        if not defer:
            sink.publish()

    @contextlib.contextmanager
    def _local_write(self, rel: str) -> Iterator[_Hashing]:
        final = self.path(rel)
        folder = os.path.dirname(final)
        os.makedirs(folder, exist_ok=True)
        tmp = f"{final}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
        try:
            with open(tmp, "wb") as f:
                sink = _Hashing(f)
                yield sink
                f.flush()
                os.fsync(f.fileno())  # the bytes are on disk before the name points at them
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        _fsync_dir(folder)  # and the rename itself survives a power cut
        sink.written = Written(sink.size, sink.digest.hexdigest(), os.stat(final).st_mtime_ns)

    def _upload(self, rel: str, spool, sink: _Hashing) -> Written:
        """Upload a spooled file whole under `rel` and check its size (object stores)."""
        if sink.written is not None:
            return sink.written
        final = self.path(rel)
        with spool, storage_errors(self.url(rel)):
            spool.seek(0)
            self.fs.create_dir(posixpath.dirname(final), recursive=True)
            with self.fs.open_output_stream(final) as out:
                while chunk := spool.read(_CHUNK):
                    out.write(chunk)
            got = self.entry(rel)
            if got is None or got.bytes != sink.size:  # never leave a short object under its name
                with contextlib.suppress(OSError):
                    self.fs.delete_file(final)
                raise StorageError(f"upload of {self.url(rel)} came out "
                                   f"{got.bytes if got else 0} bytes, not {sink.size}; {RESUME_HINT}")
        sink.written = Written(sink.size, sink.digest.hexdigest(), got.mtime_ns)
        return sink.written

    def write_bytes(self, rel: str, data: bytes) -> Written:
        with self.atomic_write(rel) as sink:
            sink.write(data)
        return sink.written

    def write_json(self, rel: str, obj) -> Written:
        return self.write_bytes(rel, json.dumps(obj, indent=2).encode() + b"\n")

    def makedirs(self, rel: str = "") -> None:
        with storage_errors(self.url(rel)):
            self.fs.create_dir(self.path(rel), recursive=True)

    def delete(self, rel: str) -> None:
        """Remove a file or a whole folder; nothing when it is missing."""
        kind = self.kind(rel)
        with storage_errors(self.url(rel)):
            if kind == "dir":
                self.fs.delete_dir(self.path(rel))
            elif kind == "file":
                self.fs.delete_file(self.path(rel))


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory
    finally:
        os.close(fd)
