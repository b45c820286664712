"""At shutdown the write-behind (cache/commits.py) writes what waits at once instead of
waiting for a burst that will not end, and its task stops: a file whose clients had their
bytes is still kept, and nothing is left running on a closing loop."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

from condaproxy.cache.commits import WriteBehind
from condaproxy.cache.workers import Workers
from condaproxy.storage.blobs import BlobStore
from condaproxy.storage.index import FileEntry, Index


async def test_aclose_writes_what_waits_then_stops(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", tmp_path / "tmp")
    index = Index(tmp_path / "index")
    workers = Workers()
    # Downloads "still receiving" for good: only the shutdown can end the wait.
    wb = WriteBehind(store, index, workers, lambda: True, False, 1 << 20, max_delay=60)
    data = b"a verified package"
    entry = FileEntry(hashlib.sha256(data).hexdigest(), len(data), 0.0)
    waiting = asyncio.create_task(wb.commit("c/noarch/p-1-0.conda", bytearray(data), entry))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    started = time.monotonic()
    await asyncio.wait_for(wb.aclose(), 10)
    assert time.monotonic() - started < 5, "did not wait out max_delay"
    await asyncio.wait_for(waiting, 1)
    assert index.get_file("c/noarch/p-1-0.conda") == entry
    assert store.path_for(entry.sha256).read_bytes() == data
    assert wb._task is not None and wb._task.done()
    workers.close()
