"""Small verified files are made durable in batches once the burst of downloads is over
(cache/commits.py): never an entry without its durable blob, a failed blob keeps nothing, and a
busy worker still commits within its bound."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest

from condaproxy.cache.commits import WriteBehind
from condaproxy.cache.workers import Workers
from condaproxy.storage.blobs import BlobStore
from condaproxy.storage.index import FileEntry, Index


def entry_of(data: bytes) -> FileEntry:
    return FileEntry(hashlib.sha256(data).hexdigest(), len(data), 0.0)


def setup(tmp_path: Path, busy: list[bool], max_delay: float = 5.0):
    store = BlobStore(tmp_path / "blobs", tmp_path / "tmp")
    index = Index(tmp_path / "index")
    workers = Workers()
    return (
        store,
        index,
        workers,
        WriteBehind(store, index, workers, lambda: busy[0], False, 1 << 20, max_delay),
    )


async def test_commits_wait_for_the_burst_and_then_go_together(tmp_path: Path) -> None:
    busy = [True]
    store, index, workers, wb = setup(tmp_path, busy)
    files = {f"c/linux-64/p{i}-1-0.conda": b"package %d" % i for i in range(5)}
    commits = [
        asyncio.create_task(wb.commit(key, bytearray(data), entry_of(data)))
        for key, data in files.items()
    ]
    await asyncio.sleep(0.1)
    assert not any(c.done() for c in commits)  # the downloads are still running
    assert all(index.get_file(key) is None for key in files)
    busy[0] = False
    await asyncio.wait_for(asyncio.gather(*commits), 5)
    for key, data in files.items():
        entry = index.get_file(key)
        assert entry == entry_of(data)
        assert store.path_for(entry.sha256).read_bytes() == data
    workers.close()


async def test_a_busy_worker_still_commits_within_its_bound(tmp_path: Path) -> None:
    _, index, workers, wb = setup(tmp_path, [True], max_delay=0.2)
    data = b"a shard"
    started = time.monotonic()
    await asyncio.wait_for(
        wb.commit("c/noarch/shards/x.msgpack.zst", bytearray(data), entry_of(data)), 5
    )
    assert 0.15 < time.monotonic() - started < 2
    assert index.get_file("c/noarch/shards/x.msgpack.zst") == entry_of(data)
    workers.close()


async def test_a_blob_that_cannot_be_made_durable_keeps_nothing(
    tmp_path: Path, monkeypatch
) -> None:
    store, index, workers, wb = setup(tmp_path, [False])
    good, bad = b"good bytes", b"bad bytes"
    put_bytes = BlobStore.put_bytes

    def failing(self, data, sha256):  # type: ignore[no-untyped-def]
        if bytes(data) == bad:
            raise OSError(28, "No space left on device")
        return put_bytes(self, data, sha256)

    monkeypatch.setattr(BlobStore, "put_bytes", failing)
    ok = asyncio.create_task(wb.commit("c/a-1-0.conda", bytearray(good), entry_of(good)))
    failed = asyncio.create_task(wb.commit("c/b-1-0.conda", bytearray(bad), entry_of(bad)))
    await asyncio.wait_for(ok, 5)
    with pytest.raises(OSError):
        await asyncio.wait_for(failed, 5)
    assert index.get_file("c/a-1-0.conda") == entry_of(good)
    assert index.get_file("c/b-1-0.conda") is None
    assert not store.path_for(entry_of(bad).sha256).exists()
    workers.close()


async def test_a_file_other_workers_wait_for_is_committed_at_once(tmp_path: Path) -> None:
    """With several workers, a shard (other workers' package misses read records from it) is
    not held back by the burst, and takes what waits along."""
    _, index, workers, wb = setup(tmp_path, [True], max_delay=30)
    package, shard = b"a package", b"a shard"
    waiting = asyncio.create_task(wb.commit("c/p-1-0.conda", bytearray(package), entry_of(package)))
    await asyncio.sleep(0.05)
    urgent = wb.commit("c/shards/s.msgpack.zst", bytearray(shard), entry_of(shard), urgent=True)
    await asyncio.wait_for(asyncio.gather(urgent, waiting), 5)
    assert index.get_file("c/shards/s.msgpack.zst") == entry_of(shard)
    assert index.get_file("c/p-1-0.conda") == entry_of(package)
    workers.close()
