"""Write-behind for small verified files: made durable in batches, after the burst that fetched
them.

A small listed file (downloads.py: gathered in memory, at most 1 MiB) reaches its clients as soon
as it is verified; its blob and index entry only make the cache durable. Each commit is a dozen
system calls in a thread (temp file, write, fsync, rename, directory fsync, SQLite), and every
one of them hands the GIL back and forth with the event loop: during a cold install (a solve
walking shards, then dozens of package misses at once) that cost about half of the proxy's CPU
per miss, paid while the clients wait on the same loop. So such commits queue, and run in one
thread hop per batch (the entries in one SQLite transaction) once no download of this process is
still receiving, or `max_delay` after the oldest was queued, or when the bytes waiting reach
`max_bytes` (they count against the download buffer budget until committed).

Nothing changes in what is kept: a blob is durable before its entry is written, an entry is
written only for verified bytes, and a crash before a batch loses only cache entries nobody was
promised (the clients had their bytes). Meanwhile the file is still served from memory to every
client of this process (its download stays active until committed), and another worker waiting
for it waits at most `max_delay` more (downloads.py keeps the cross-worker lock until then).
A file other workers are likely to need at once (a shard: their package misses look records up
in it) is committed without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..storage.blobs import BlobStore
from ..storage.index import FileEntry, Index
from .transfer import Download
from .workers import Workers

POLL_SECONDS = 0.005  # how often a waiting batch looks whether the burst is over
# How long a small verified file may wait for its commit while downloads are still running:
# with one worker every client of it is served from memory meanwhile; with several, a client
# of another worker waits for the commit (it holds the cross-worker lock until then).
WRITE_BEHIND = 1.0
WRITE_BEHIND_SHARED = 0.25
SHARD_SUFFIX = ".msgpack.zst"


@dataclass
class _Pending:
    key: str
    data: bytearray
    entry: FileEntry
    done: asyncio.Future[None]
    queued_at: float = field(default_factory=time.monotonic)


class WriteBehind:
    def __init__(
        self,
        store: BlobStore,
        index: Index,
        workers: Workers,
        busy: Callable[[], bool],
        shared: bool,
        max_bytes: int,
        max_delay: float | None = None,
    ) -> None:
        self.store, self.index, self.workers = store, index, workers
        self.busy = busy  # whether a download of this process is still receiving
        self.shared = shared  # other workers share the cache
        default = WRITE_BEHIND_SHARED if shared else WRITE_BEHIND
        self.max_delay = default if max_delay is None else max_delay
        self.max_bytes = max_bytes
        self._queue: list[_Pending] = []
        self._queued_bytes = 0
        self._urgent = False
        self._writing = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def keep(self, d: Download, entry: FileEntry) -> None:
        """Make a verified download durable: the blob, then its entry (only after the blob is
        durable), in a durable thread (SQLite's write, and a checkpoint's fsync, never stall
        the loop); a small file in memory with the next batch. Raises OSError or
        sqlite3.Error if it could not be kept."""
        if d.buffer is not None:
            # Another worker's package misses read their records from shards: with several
            # workers a shard is committed at once, not after the burst.
            urgent = self.shared and d.key.endswith(SHARD_SUFFIX)
            await self.commit(d.key, d.buffer, entry, urgent)
        else:
            await self.workers.durable(self._commit_temp, d, entry)
        self.index.remember_file(d.key, entry)

    def _commit_temp(self, d: Download, entry: FileEntry) -> None:
        assert d.temp is not None
        self.store.commit(d.temp, entry.sha256, False)  # readers keep tailing the temp file
        self.index.write_file(d.key, entry)

    async def commit(
        self, key: str, data: bytearray, entry: FileEntry, urgent: bool = False
    ) -> None:
        """Return once the blob and then its entry are durable; raise OSError or
        sqlite3.Error if they could not be made so (nothing of it is then kept). An `urgent`
        commit (a file another worker is likely to wait for) goes at once, with what waits."""
        pending = _Pending(key, data, entry, asyncio.get_running_loop().create_future())
        self._urgent = self._urgent or urgent
        self._queue.append(pending)
        self._queued_bytes += len(data)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        self._wake.set()
        await asyncio.shield(pending.done)  # a cancelled waiter leaves the commit to finish

    async def aclose(self, timeout: float = 5.0) -> None:
        """At shutdown: write what waits at once (for up to `timeout` seconds), then stop."""
        task = self._task
        if task is None:
            return
        self._urgent = True
        self._wake.set()
        deadline = time.monotonic() + timeout
        while (self._queue or self._writing) and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(POLL_SECONDS)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # What the disk did not take in time is not kept: its waiters are told so.
        left, self._queue, self._queued_bytes = self._queue, [], 0
        self._answer(left, [_not_kept()] * len(left))

    async def _drain(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                await self._settle()
                batch, self._queue, self._queued_bytes = self._queue, [], 0
                self._urgent = False
                self._writing = True
                try:
                    await self._write(batch)
                finally:
                    self._writing = False

    async def _settle(self) -> None:
        """Wait until the burst is over, the oldest commit has waited long enough, or too many
        bytes wait."""
        deadline = self._queue[0].queued_at + self.max_delay
        while (
            not self._urgent
            and self.busy()
            and time.monotonic() < deadline
            and self._queued_bytes < self.max_bytes
        ):
            await asyncio.sleep(POLL_SECONDS)

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            errors = await self.workers.durable(self._make_durable, batch)
        except asyncio.CancelledError:  # shutdown stopped waiting for a stalled disk
            self._answer(batch, [_not_kept()] * len(batch))
            raise  # swallowed, the drain went on waiting and shutdown waited for it forever
        except BaseException as exc:  # the pool is gone (shutdown): nothing more is kept
            errors = [exc] * len(batch)
        self._answer(batch, errors)

    @staticmethod
    def _answer(batch: list[_Pending], errors: list[BaseException | None]) -> None:
        for pending, error in zip(batch, errors, strict=True):
            if pending.done.done():
                continue
            if error is None:
                pending.done.set_result(None)
            else:
                pending.done.set_exception(error)

    def _make_durable(self, batch: list[_Pending]) -> list[BaseException | None]:
        """In a durable thread: each blob (fsync, rename, directory fsync), then the entries of
        those made durable, in one transaction."""
        errors: list[BaseException | None] = []
        for pending in batch:
            try:
                self.store.put_bytes(pending.data, pending.entry.sha256)
                errors.append(None)
            except OSError as exc:
                errors.append(exc)
        durable = [p for p, error in zip(batch, errors, strict=True) if error is None]
        try:
            with self.index.transact():
                for pending in durable:
                    self.index.write_file(pending.key, pending.entry)
        except (OSError, sqlite3.Error) as exc:
            return [error or exc for error in errors]
        return errors


def _not_kept() -> OSError:
    return OSError("not kept: the server stopped before the disk took it")
