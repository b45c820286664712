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
Outcome = bool | BaseException  # kept, dropped by a purge, or why it could not be kept


@dataclass
class _Pending:
    key: str
    data: bytearray
    entry: FileEntry
    purges: int  # the index's purge count when the file was verified
    done: asyncio.Future[bool]
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

    async def keep(self, d: Download, entry: FileEntry) -> bool:
        """Make a verified download durable: the blob, then its entry (only after the blob is
        durable), in a durable thread (SQLite's write, and a checkpoint's fsync, never stall
        the loop); a small file in memory with the next batch. False if a purge came in
        meanwhile (nothing is kept: a purge removes what was fetched before it, also in any
        other worker). Raises OSError or sqlite3.Error if it could not be kept."""
        purges = self.index.purges()
        if d.buffer is not None:
            # Another worker's package misses read their records from shards: with several
            # workers a shard is committed at once, not after the burst.
            urgent = self.shared and d.key.endswith(SHARD_SUFFIX)
            kept = await self.commit(d.key, d.buffer, entry, urgent, purges)
        else:
            kept = await self.workers.durable(self._commit_temp, d, entry, purges)
        if kept:
            self.index.remember_file(d.key, entry)
        return kept

    def _commit_temp(self, d: Download, entry: FileEntry, purges: int) -> bool:
        assert d.temp is not None
        if self.index.purges() != purges:
            return False
        self.store.commit(d.temp, entry.sha256, False)  # readers keep tailing the temp file
        with self.index.transact():
            if self.index.purges() == purges:
                self.index.write_file(d.key, entry)
                return True
        self.store.delete(entry.sha256)  # the purge ran while the blob was written
        return False

    async def commit(
        self,
        key: str,
        data: bytearray,
        entry: FileEntry,
        urgent: bool = False,
        purges: int | None = None,
    ) -> bool:
        """Return once the blob and then its entry are durable (True), or once a purge after
        `purges` (the index's count when the file was verified) dropped them (False); raise
        OSError or sqlite3.Error if they could not be made durable (nothing of it is then
        kept). An `urgent` commit (a file another worker is likely to wait for) goes at once,
        with what waits."""
        if purges is None:
            purges = self.index.purges()
        future = asyncio.get_running_loop().create_future()
        pending = _Pending(key, data, entry, purges, future)
        self._urgent = self._urgent or urgent
        self._queue.append(pending)
        self._queued_bytes += len(data)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        self._wake.set()
        return await asyncio.shield(pending.done)  # a cancelled waiter leaves it to finish

    async def flush(self, timeout: float = 5.0) -> None:
        """Write what waits now and return once it is written, or after `timeout` seconds.
        After a purge, what it dropped so leaves memory (its clients of this process would
        still get it from there)."""
        task = self._task
        if task is None:
            return
        self._urgent = True
        self._wake.set()
        deadline = time.monotonic() + timeout
        while (self._queue or self._writing) and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(POLL_SECONDS)

    async def aclose(self, timeout: float = 5.0) -> None:
        """At shutdown: write what waits at once (for up to `timeout` seconds), then stop."""
        task = self._task
        if task is None:
            return
        await self.flush(timeout)
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
    def _answer(batch: list[_Pending], errors: list[Outcome]) -> None:
        for pending, error in zip(batch, errors, strict=True):
            if pending.done.done():
                continue
            if isinstance(error, bool):
                pending.done.set_result(error)
            else:
                pending.done.set_exception(error)

    def _make_durable(self, batch: list[_Pending]) -> list[Outcome]:
        """In a durable thread: each blob (fsync, rename, directory fsync), then the entries of
        those made durable, in one transaction. A file verified before a purge is dropped
        (False): the count is read again inside the transaction, which purges' count orders
        against, so no entry from before a purge is written after it."""
        purges = self.index.purges()
        outcomes: list[Outcome] = []
        for pending in batch:
            if pending.purges != purges:
                outcomes.append(False)
                continue
            try:
                self.store.put_bytes(pending.data, pending.entry.sha256)
                outcomes.append(True)
            except OSError as exc:
                outcomes.append(exc)
        durable = [p for p, outcome in zip(batch, outcomes, strict=True) if outcome is True]
        try:
            with self.index.transact():
                purges = self.index.purges()
                late = [p for p in durable if p.purges != purges]
                for pending in durable:
                    if pending.purges == purges:
                        self.index.write_file(pending.key, pending.entry)
        except (OSError, sqlite3.Error) as exc:
            return [exc if outcome is True else outcome for outcome in outcomes]
        for pending in late:  # a purge ran while their blobs were written
            self.store.delete(pending.entry.sha256)
        dropped = {id(p) for p in late}
        return [
            False if id(p) in dropped else outcome
            for p, outcome in zip(batch, outcomes, strict=True)
        ]


def _not_kept() -> OSError:
    return OSError("not kept: the server stopped before the disk took it")
