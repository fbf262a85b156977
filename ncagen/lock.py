"""One build per output directory: a lock file in it, held while the build runs.

`DIR/.ncagen.lock` names its holder (process id, host, build id), when it started and when it
last showed signs of life (the holder refreshes it while it runs). A second build into the same
directory refuses with a one-line error while the lock is live. A lock is stale, and taken
over, when its holder ran on this host and that process is gone, or when it has not been
refreshed for `STALE_AFTER` seconds (a holder on another host that died).

On a local filesystem the lock is created with O_EXCL, so two builds cannot both take it. An
object store has no create-if-absent in pyarrow: the lock is written, read back, and the build
goes on only if it is still its own; a race inside that window is possible but needs two
submissions within the same second.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from .storage import Storage, StorageError, storage_errors

LOCK = ".ncagen.lock"
REFRESH_EVERY = 30.0  # seconds between the holder's refreshes
STALE_AFTER = 600.0  # a lock not refreshed for this long belongs to a dead build


class LockedError(RuntimeError):
    """Another build holds the output directory."""


@dataclass
class LockInfo:
    """What a lock file says."""

    pid: int
    host: str
    build: str
    started: float
    refreshed: float

    @classmethod
    def mine(cls) -> "LockInfo":
        now = time.time()
        return cls(os.getpid(), socket.gethostname(), uuid.uuid4().hex[:12], now, now)

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    def stale(self, now: float | None = None) -> bool:
        """Whether the holder is known dead (this host) or silent for too long."""
        if self.host == socket.gethostname() and not _alive(self.pid):
            return True
        return (now or time.time()) - self.refreshed > STALE_AFTER

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"process {self.pid} on {self.host} since {started}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BuildLock:
    """The lock of one build directory; use as a context manager around the build."""

    def __init__(self, store: Storage):
        self.store, self.info = store, LockInfo.mine()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> LockInfo | None:
        try:
            raw = self.store.read_bytes(LOCK)
        except FileNotFoundError:
            return None
        try:
            return LockInfo(**json.loads(raw.decode()))
        except (ValueError, TypeError):
            return None  # a torn lock file: its writer died while writing it

    def acquire(self) -> None:
        """Take the lock or raise LockedError naming its live holder."""
        self.store.makedirs()
        for _ in range(3):
            if self._create():
                return
            held = self.read()
            if held is not None and not held.stale():
                raise LockedError(
                    f"{self.store.url()} is being built by another ncagen build "
                    f"({held.describe()}); wait for it to finish, or if it is dead, delete "
                    f"{self.store.url(LOCK)} and rerun")
            self.store.delete(LOCK)  # stale: its holder is gone
        raise LockedError(f"could not take the lock {self.store.url(LOCK)}; rerun")

    def _create(self) -> bool:
        """Create the lock file if there is none; whether this build now holds it."""
        if self.store.local:
            path = self.store.path(LOCK)
            with storage_errors(path):
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                try:
                    with os.fdopen(fd, "wb") as f:
                        f.write(self.info.to_json())
                        f.flush()
                        os.fsync(f.fileno())
                except BaseException:  # a full disk: no empty lock is left behind
                    with contextlib.suppress(OSError):
                        os.remove(path)
                    raise
            return True
        if self.store.kind(LOCK) != "missing":
            return False
        self.store.write_bytes(LOCK, self.info.to_json())
        held = self.read()
        return held is not None and held.build == self.info.build

    def refresh(self) -> None:
        """Show the lock's holder is alive."""
        self.info.refreshed = time.time()
        self.store.write_bytes(LOCK, self.info.to_json())

    def release(self) -> None:
        held = self.read()
        if held is not None and held.build == self.info.build:
            self.store.delete(LOCK)

    def _beat(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            try:
                self.refresh()
            except StorageError:
                pass  # storage hiccup: the next beat tries again; the build reports real failures

    def __enter__(self) -> "BuildLock":
        self.acquire()
        self._thread = threading.Thread(target=self._beat, name="ncagen-lock", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.release()
        except StorageError:
            pass  # the lock goes stale by itself
