"""The index keys entries by plain strings; an index written with tuple keys (earlier versions)
is converted when opened, so nothing cached before an upgrade is lost."""

from __future__ import annotations

from pathlib import Path

import diskcache

from condaproxy.storage.index import FileEntry, Index, MetaEntry
from condaproxy.storage.keys import MetaKey


def test_an_index_with_tuple_keys_is_converted_on_open(tmp_path: Path):
    old = diskcache.Cache(str(tmp_path / "index"))
    entry = FileEntry("ab" * 32, 10, 1.0)
    meta = MetaEntry("https://up/x/repodata.json", '"e"', None, 1.0, 1.0, "d" * 64)
    old.set(("file", "cf/noarch/a-1-0.conda"), entry)
    old.set(("meta", "repodata:cf/noarch"), meta)
    old.set(("missing", "cf/noarch/b-1-0.conda"), 5.0)
    old.set(("value", "upstreams"), {"cf": "https://up/x"})
    old.close()

    index = Index(tmp_path / "index")
    try:
        assert index.get_file("cf/noarch/a-1-0.conda") == entry
        assert index.get_meta(MetaKey.repodata("cf/noarch")) == meta
        assert index.is_missing("cf/noarch/b-1-0.conda", now=1.0)
        assert index.get_value(("upstreams",), None) == {"cf": "https://up/x"}
        assert [k for k, _ in index.iter_files()] == ["cf/noarch/a-1-0.conda"]
        assert [str(k) for k, _ in index.iter_meta()] == ["repodata:cf/noarch"]
        assert not [k for k in index._db.iterkeys() if isinstance(k, tuple)]
    finally:
        index.close()
