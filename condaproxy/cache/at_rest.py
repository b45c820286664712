"""Cached metadata that was on disk before this process started is checked against its sha256
before it is served: a crash before writeback, bit rot or a stray hand may have changed it while
nothing ran. Each variant file is hashed once per process (in a thread, one check however many
requests ask); a file written since the process started was made by this server and is trusted,
as a package blob its writer verified is. What fails the check is dropped and fetched again
(metadata.py), never served."""

from __future__ import annotations

import asyncio
import os
import time

from ..storage.blobs import BlobStore
from ..storage.entries import open_regular
from ..storage.index import MetaEntry, Variant
from ..storage.keys import MetaKey, MetaKind
from .variants import file_sha256
from .workers import Workers


class AtRest:
    def __init__(self, workers: Workers, started: float | None = None) -> None:
        self.workers = workers
        self.started = time.time() if started is None else started
        self._checked: set[str] = set()  # sha256 of the variant files this process trusts
        self._checking: dict[str, asyncio.Task[bool]] = {}

    async def intact(self, store: BlobStore, entry: MetaEntry) -> bool:
        """Whether every variant file `entry` names holds the bytes it was stored with."""
        for variant in entry.variants.values():
            if variant.sha256 not in self._checked and not await self._check(store, variant):
                return False
        return True

    async def _check(self, store: BlobStore, variant: Variant) -> bool:
        sha = variant.sha256
        task = self._checking.get(sha)
        if task is None:
            path = store.location(sha)
            content = variant.content_sha256  # the name, unless derived from inputs
            check = self.workers.io(matches, path, content, variant.size, self.started)
            task = self._checking[sha] = asyncio.ensure_future(check)
            task.add_done_callback(lambda _: self._checking.pop(sha, None))
        ok = await asyncio.shield(task)
        if ok:
            self._checked.add(sha)
        return ok

    def forget(self, sha256: str) -> None:
        self._checked.discard(sha256)


def matches(path: str, sha256: str, size: int, started: float) -> bool:
    """Whether the file at `path` is `size` bytes of sha256 `sha256` (blocking: a thread's)."""
    try:
        fd = open_regular(path)  # a directory, link or fifo in its place is not it
    except OSError:
        return False
    try:
        stat = os.fstat(fd)
        if stat.st_size != size:
            return False
        if stat.st_mtime >= started:
            return True  # written since this process started: by this server
    finally:
        os.close(fd)
    try:
        return file_sha256(path) == sha256
    except OSError:  # gone meanwhile
        return False


# Views whose files are named after their inputs, not their content (variants.Built.contents).
VIEWS_NAMED_BY_INPUTS = frozenset(
    {MetaKind.MERGED, MetaKind.MERGED_SHARDS, MetaKind.POLICY, MetaKind.POLICY_SHARDS}
)


def unrecorded_view(key: MetaKey, entry: MetaEntry) -> bool:
    """A view written by a version that recorded no content hash for it: it fails its check
    once, as expected, and is made again (an upgrade, not damage)."""
    return key.kind in VIEWS_NAMED_BY_INPUTS and any(not v.content for v in entry.variants.values())
