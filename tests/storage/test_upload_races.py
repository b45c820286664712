"""Two workers changing uploads of two channels at once must lose nothing.

Upload blobs are content-addressed and shared between channels: channel `a` and channel `b`
may hold the same bytes. Worker 1 records `b`'s upload (blob made durable, then the manifest
written) while worker 2 deletes `a`'s copy of the same bytes (manifest written, then the blob
dropped if no manifest names it). Under per-channel locks, worker 2 could look for references
between worker 1's blob commit and its manifest write, find none, and delete the blob `b`'s
new manifest then names: a 404 for a file the API lists. Here the two workers are two stores
on the same directories, each with its own cross-process locks, and worker 2's delete is
started exactly inside that window."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path

from condaproxy.storage.blobs import BlobStore, TempBlob
from condaproxy.storage.locks import KeyedLocks
from condaproxy.storage.uploads import Upload, UploadStore

FILE = "tool-1.0-h0.conda"
DATA = b"the same package bytes in two channels"
SHA = hashlib.sha256(DATA).hexdigest()


def worker(tmp_path: Path) -> UploadStore:
    return UploadStore(tmp_path / "uploads", tmp_path / "tmp", KeyedLocks(tmp_path / "locks"))


def staged(store: UploadStore, channel: str) -> tuple[Upload, TempBlob]:
    temp = store.blobs.new_temp()
    temp.write(DATA)
    record = {"name": "tool", "version": "1.0", "build": "h0", "subdir": "linux-64"}
    return Upload(channel, "linux-64", FILE, SHA, len(DATA), 0.0, "ci", record), temp


def test_deleting_a_copy_in_one_channel_never_drops_the_blob_another_is_recording(
    tmp_path: Path, monkeypatch
) -> None:
    (tmp_path / "tmp").mkdir()
    one, two = worker(tmp_path), worker(tmp_path)
    asyncio.run(one.add(*staged(one, "a"), force=False))

    deleting = threading.Thread(target=lambda: asyncio.run(two.delete("a", "linux-64", FILE)))
    commit = BlobStore.commit

    def commit_then_let_worker_two_delete(self, temp, sha256, close=True):  # type: ignore[no-untyped-def]
        path = commit(self, temp, sha256, close)
        deleting.start()
        deleting.join(timeout=1.0)  # done at once unless a lock holds it off
        return path

    monkeypatch.setattr(BlobStore, "commit", commit_then_let_worker_two_delete)
    asyncio.run(one.add(*staged(one, "b"), force=False))
    monkeypatch.setattr(BlobStore, "commit", commit)
    deleting.join(timeout=10)
    assert not deleting.is_alive()

    assert one.get("a", "linux-64", FILE) is None  # the delete did happen
    assert worker(tmp_path).get("b", "linux-64", FILE) is not None
    assert one.blobs.path_for(SHA).read_bytes() == DATA, "the blob b's manifest names is there"


def test_a_worker_starting_up_never_sweeps_the_blob_another_is_recording(
    tmp_path: Path, monkeypatch
) -> None:
    """A worker (re)started while another records an upload sweeps orphan blobs at start: the
    blob committed a moment ago, not yet named by its manifest, is no orphan."""
    (tmp_path / "tmp").mkdir()
    one = worker(tmp_path)
    swept: list[int] = []
    commit = BlobStore.commit

    def commit_then_start_a_worker(self, temp, sha256, close=True):  # type: ignore[no-untyped-def]
        path = commit(self, temp, sha256, close)
        swept.append(worker(tmp_path).sweep_orphans())
        return path

    monkeypatch.setattr(BlobStore, "commit", commit_then_start_a_worker)
    asyncio.run(one.add(*staged(one, "b"), force=False))
    monkeypatch.setattr(BlobStore, "commit", commit)

    assert swept == [0]
    assert one.blobs.path_for(SHA).read_bytes() == DATA
    # A real orphan (a kill -9 between commit and manifest write) still goes, once alone.
    orphan = one.blobs.new_temp()
    orphan.write(b"orphan")
    one.blobs.commit(orphan, hashlib.sha256(b"orphan").hexdigest())
    assert worker(tmp_path).sweep_orphans() == 1
    assert one.blobs.path_for(SHA).read_bytes() == DATA
