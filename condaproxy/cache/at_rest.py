"""Cached metadata is checked against its sha256 before it is served: a crash before writeback,
bit rot or a stray hand may have changed it while nothing ran, and another program may write
over it while the proxy runs. Each variant file is hashed once per process (in a thread, one
check however many requests ask) and remembered with its inode and mtime, which every request
compares (one lstat per file): a file that changed since is hashed again, whenever it was
written. A file this server placed while this process runs (any worker: the writer records
the file's stamp in its index entry, `Variant.stamp`) and unchanged since is trusted unhashed,
as a package blob its writer verified is; a file merely written since the start is not (a
hand may have written over it before this process first served it). What fails the check is
dropped and fetched again (metadata.py), never served."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time

from ..storage.blobs import BlobStore, sha256_of_fd, stamp_of
from ..storage.entries import open_regular
from ..storage.index import MetaEntry, Variant
from ..storage.keys import MetaKey, MetaKind
from .workers import Workers


class AtRest:
    def __init__(self, workers: Workers, started: float | None = None) -> None:
        self.workers = workers
        self.started = fs_now() if started is None else started
        # The variant files this process trusts: sha256 -> the stamp of the file it checked.
        self._checked: dict[str, int] = {}
        self._checking: dict[str, asyncio.Task[int | None]] = {}

    async def intact(self, store: BlobStore, entry: MetaEntry) -> bool:
        """Whether every variant file `entry` names holds the bytes it was stored with."""
        for variant in entry.variants.values():
            sha = variant.sha256
            checked = self._checked.get(sha)
            if checked is not None and checked == _stamp_at(store.location(sha)):
                continue
            if not await self._check(store, variant):
                return False
        return True

    async def _check(self, store: BlobStore, variant: Variant) -> bool:
        """Hash the file (or take it unhashed as the one this server placed since the start:
        `matches`); remember its stamp if it holds what it should."""
        sha = variant.sha256
        task = self._checking.get(sha)
        if task is None:
            path = store.location(sha)
            content = variant.content_sha256  # the name, unless derived from inputs
            placed = variant.stamp
            check = self.workers.io(matches, path, content, variant.size, self.started, placed)
            task = self._checking[sha] = asyncio.ensure_future(check)
            task.add_done_callback(lambda _: self._checking.pop(sha, None))
        stamp = await asyncio.shield(task)
        if stamp is None:
            self._checked.pop(sha, None)
            return False
        self._checked[sha] = stamp
        return True

    def forget(self, sha256: str) -> None:
        self._checked.pop(sha256, None)


def fs_now() -> float:
    """Now, as the filesystem stamps what it writes. Linux takes mtimes from its coarse clock,
    a tick (4-10 ms) behind time.time(): a file written just after a start read from
    time.time() looked older than the start, and was hashed again (found as a flaky test)."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            return time.clock_gettime(5)  # CLOCK_REALTIME_COARSE
    return time.time() - 0.05


def matches(path: str, sha256: str, size: int, started: float, placed: int = 0) -> int | None:
    """The stamp of the file at `path` if it is `size` bytes of sha256 `sha256`, or the very
    file this server placed since `started` (its stamp is `placed`, and it was written at or
    after the start: a stamp from an earlier run says nothing of what a crash or bit rot did
    since), else None (blocking: a thread's)."""
    try:
        fd = open_regular(path)  # a directory, link or fifo in its place is not it
    except OSError:
        return None
    try:
        stat = os.fstat(fd)
        if stat.st_size != size:
            return None
        stamp = stamp_of(stat)  # as it was before it was read
        if placed and stamp == placed and stat.st_mtime >= started:
            return stamp  # placed by this server since this process started, untouched
        return stamp if sha256_of_fd(fd) == sha256 else None
    finally:
        os.close(fd)


def _stamp_at(path: str) -> int | None:
    try:
        return stamp_of(os.lstat(path))  # a link put in the file's place is another inode
    except OSError:
        return None


# Views whose files are named after their inputs, not their content (variants.Built.contents).
VIEWS_NAMED_BY_INPUTS = frozenset(
    {MetaKind.MERGED, MetaKind.MERGED_SHARDS, MetaKind.POLICY, MetaKind.POLICY_SHARDS}
)


def unrecorded_view(key: MetaKey, entry: MetaEntry) -> bool:
    """A view written by a version that recorded no content hash for it: it fails its check
    once, as expected, and is made again (an upgrade, not damage)."""
    return key.kind in VIEWS_NAMED_BY_INPUTS and any(not v.content for v in entry.variants.values())
