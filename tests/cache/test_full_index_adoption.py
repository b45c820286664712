"""A snapshot the index cannot name (a full disk: SQLite cannot grow) leaves no file behind: the
variants moved into the key's store are deleted again, the previous snapshot stays as it was."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from condaproxy.cache.metadata import MetadataCache
from condaproxy.cache.variants import Built, write_variant
from condaproxy.cache.workers import Workers
from condaproxy.storage.index import Index
from condaproxy.storage.keys import MetaKey
from condaproxy.storage.locks import KeyedLocks
from condaproxy.storage.sqlite_disk import IndexFull


def stored(meta: MetadataCache, key: MetaKey) -> list[str]:
    return sorted(p.name for p in meta.store_for(key).root.rglob("*") if p.is_file())


def test_a_snapshot_the_full_index_cannot_name_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    index = Index(tmp_path / "index")
    meta = MetadataCache(
        index=index,
        locks=KeyedLocks(tmp_path / "locks", shared=False),
        root=tmp_path / "meta",
        tmp_dir=tmp,
        upstream=None,  # type: ignore[arg-type]
        ttl=60,
        negative_ttl=30,
        workers=Workers(),
    )
    key = MetaKey.repodata("ch/linux-64")
    old = write_variant(str(tmp), "zst", b"old snapshot")
    first = meta._adopt(key, "http://u/repodata.json.zst", None, None, Built("a", {"zst": old}))
    before = stored(meta, key)

    def full(*args: object) -> None:
        raise IndexFull(errno.ENOSPC, "the index cannot grow: database or disk is full")

    monkeypatch.setattr(index, "put_meta", full)
    new = write_variant(str(tmp), "zst", b"new snapshot")
    with pytest.raises(OSError):
        meta._adopt(key, "http://u/repodata.json.zst", None, None, Built("b", {"zst": new}))
    assert stored(meta, key) == before
    assert index.get_meta(key) == first
    assert not list(tmp.iterdir())
    index.close()
