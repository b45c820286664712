"""Shutdown with a disk that stalls (fsync of a batch taking longer than the write-behind's
shutdown wait, cache/commits.py): the server still stops. The batch's clients are told their
file was not kept (an OSError, which downloads.py logs), and what was queued behind the stalled
batch is answered too, so no download task is left waiting on the closing loop."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from pathlib import Path

from condaproxy.cache.commits import WriteBehind
from condaproxy.cache.workers import Workers
from condaproxy.storage.blobs import BlobStore
from condaproxy.storage.index import FileEntry, Index


class StalledDisk(Workers):
    """Durable writes block until `release` is set (an fsync stuck on a busy disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    async def durable(self, fn, *args):  # type: ignore[no-untyped-def]
        def stalled():  # type: ignore[no-untyped-def]
            self.release.wait(30)
            return fn(*args)

        return await super().durable(stalled)


def entry_of(data: bytes) -> FileEntry:
    return FileEntry(hashlib.sha256(data).hexdigest(), len(data), 0.0)


async def test_shutdown_stops_while_the_disk_stalls(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", tmp_path / "tmp")
    index = Index(tmp_path / "index")
    workers = StalledDisk()
    wb = WriteBehind(store, index, workers, lambda: False, False, 1 << 20, max_delay=0)
    first = asyncio.create_task(wb.commit("c/noarch/a-1-0.conda", bytearray(b"a"), entry_of(b"a")))
    await asyncio.sleep(0.1)  # the batch holding `first` is now stuck in the disk
    second = asyncio.create_task(wb.commit("c/noarch/b-1-0.conda", bytearray(b"b"), entry_of(b"b")))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    try:
        closing = asyncio.create_task(wb.aclose(timeout=0.3))
        await asyncio.wait([closing], timeout=5)  # not wait_for: its cancel would be swallowed
        assert closing.done(), "shutdown still waiting for the write-behind"
        assert time.monotonic() - started < 5
        for waiter in (first, second):
            await asyncio.wait_for(asyncio.wait([waiter]), 1)
            assert waiter.done() and not waiter.cancelled()
            assert isinstance(waiter.exception(), OSError), waiter.exception()
    finally:
        workers.release.set()
        await asyncio.sleep(0.1)
        workers.close()
