"""Per-key locks that work within one process (asyncio) and across uvicorn workers (flock).

With one worker (`shared=False`), nothing else can take a lock on the cache, so no lock file is
touched: in-process exclusion (asyncio locks, and the synchronous sections between awaits)
is all there is to keep, and the hot path saves an open, a flock and a close per miss."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path

from ..rules.names import hashed_name
from .entries import ensure_dir, open_own

POLL_SECONDS = 0.01
UNSHARED = -1  # the "descriptor" of a lock nobody else can take


class KeyedLocks:
    def __init__(self, lock_dir: Path, shared: bool = True) -> None:
        self.lock_dir = lock_dir
        self.shared = shared
        ensure_dir(lock_dir, lock_dir.parent)
        self._local: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}  # holders and waiters per key, to drop idle locks

    def _path(self, key: str) -> Path:
        return self.lock_dir / hashed_name(key, ".lock")

    def try_acquire(self, key: str) -> int | None:
        """Take the cross-process lock if free: returns the fd to release, or None."""
        if not self.shared:
            return UNSHARED
        try:
            fd = open_own(self._path(key))
        except (FileNotFoundError, NotADirectoryError):  # removed, or a file in its place
            ensure_dir(self.lock_dir, self.lock_dir.parent)
            fd = open_own(self._path(key))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def is_held(self, key: str) -> bool:
        fd = self.try_acquire(key)
        if fd is None:
            return True
        release(fd)
        return False

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Exclusive section for `key`: waiters in this process queue on an asyncio lock,
        waiters in other workers poll the flock."""
        lock = self._local.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                fd = self.try_acquire(key)
                while fd is None:
                    await asyncio.sleep(POLL_SECONDS)
                    fd = self.try_acquire(key)
                try:
                    yield
                finally:
                    release(fd)
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key]
                self._local.pop(key, None)


def release(fd: int) -> None:
    if fd == UNSHARED:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
