"""The content-addressed store: durable commits, temp files held by their writers, and the
start-up sweep that removes only what nobody holds."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from condaproxy.storage.blobs import BlobStore, new_temp, sweep_temp_files


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", tmp_path / "tmp")


def test_a_committed_blob_is_found_by_its_sha256_and_its_temp_file_is_gone(store):
    data = b"some bytes"
    sha = hashlib.sha256(data).hexdigest()
    path = store.put_bytes(data, sha)
    assert path == store.path_for(sha) and path.read_bytes() == data
    assert store.exists(sha) and list(store.iterate()) == [(sha, len(data))]
    assert list(store.tmp_dir.iterdir()) == []
    assert store.delete(sha) == len(data) and not store.exists(sha)
    assert store.delete(sha) == 0, "deleting what is gone is no error"
    with pytest.raises(FileNotFoundError):
        store.open(sha)


def test_a_failed_write_leaves_no_temp_file(store):
    with pytest.raises(TypeError):
        store.put_bytes("not bytes", "0" * 64)  # type: ignore[arg-type]
    assert list(store.tmp_dir.iterdir()) == []


def test_the_sweep_removes_abandoned_temp_files_but_not_those_being_written(tmp_path, store):
    live = store.new_temp()  # a writer holds its flock
    abandoned = new_temp(store.tmp_dir)
    abandoned.close()  # its writer died: the flock went with it
    assert sweep_temp_files(store.tmp_dir) == 1
    assert live.path.exists() and not abandoned.path.exists()
    live.discard()
    assert sweep_temp_files(tmp_path / "never-made") == 0


def test_a_directory_in_the_temp_dir_does_not_stop_the_sweep(store):
    """The sweep runs at start-up: something that is no temp file (here a directory) is left
    alone, it must not make the proxy fail to start with a traceback."""
    (store.tmp_dir / "not-a-temp-file").mkdir()
    abandoned = new_temp(store.tmp_dir)
    abandoned.close()
    assert sweep_temp_files(store.tmp_dir) == 1
    assert (store.tmp_dir / "not-a-temp-file").is_dir()
