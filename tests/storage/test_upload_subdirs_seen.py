"""Which subdirs of a channel hold uploads is asked on every package and shard request, and is
remembered in each worker between changes: an upload or a delete made by another worker must
still be seen by the very next request (its overlay, or the 404 of a hidden file), never a
stale answer. The two workers are two stores on the same directories."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from condaproxy.storage.blobs import TempBlob
from condaproxy.storage.locks import KeyedLocks
from condaproxy.storage.uploads import Upload, UploadStore

DATA = b"an uploaded package"
SHA = hashlib.sha256(DATA).hexdigest()


def worker(tmp_path: Path) -> UploadStore:
    return UploadStore(tmp_path / "uploads", tmp_path / "tmp", KeyedLocks(tmp_path / "locks"))


def staged(store: UploadStore, subdir: str) -> tuple[Upload, TempBlob]:
    temp = store.blobs.new_temp()
    temp.write(DATA)
    record = {"name": "tool", "version": "1.0", "build": "h0", "subdir": subdir}
    return Upload("c", subdir, "tool-1.0-h0.conda", SHA, len(DATA), 0.0, "ci", record), temp


def test_another_workers_uploads_and_deletes_are_seen_at_once(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    reader, writer = worker(tmp_path), worker(tmp_path)
    assert reader.subdirs("c") == [] and reader.subdirs("c") == []  # remembered

    asyncio.run(writer.add(*staged(writer, "linux-64"), force=False))
    assert reader.subdirs("c") == ["linux-64"]
    asyncio.run(writer.add(*staged(writer, "noarch"), force=False))
    assert reader.subdirs("c") == ["linux-64", "noarch"]
    asyncio.run(writer.delete("c", "linux-64", "tool-1.0-h0.conda"))
    assert reader.subdirs("c") == ["noarch"]
    assert reader.subdirs("other") == []


def test_uploads_recorded_before_the_channel_marker_existed_are_seen(tmp_path: Path) -> None:
    """A cache written by an earlier version has uploads but no channel marker."""
    (tmp_path / "tmp").mkdir()
    old = worker(tmp_path)
    asyncio.run(old.add(*staged(old, "linux-64"), force=False))
    for marker in (tmp_path / "uploads" / "changed").iterdir():
        marker.unlink()
    assert worker(tmp_path).subdirs("c") == ["linux-64"]
