"""Typed metadata keys: their stored form reads back as the same key, anything else as None."""

from __future__ import annotations

import pytest

from condaproxy.storage.keys import MetaKey, MetaKind


@pytest.mark.parametrize(
    "key",
    [
        MetaKey.repodata("cf/linux-64"),
        MetaKey.shard_index("cf/label/dev/noarch"),
        MetaKey.merged("team/linux-64"),
        MetaKey.merged_shards("team/linux-64"),
        MetaKey.file("cf/noarch/channeldata.json"),
    ],
)
def test_a_key_reads_back_from_its_stored_form(key):
    assert MetaKey.parse(str(key)) == key
    assert key.lock == f"meta:{key}"


@pytest.mark.parametrize("text", ["repodata", "nonsense:cf/linux-64", ""])
def test_other_text_is_no_key(text):
    assert MetaKey.parse(text) is None


def test_the_stored_form_keeps_existing_caches_readable():
    assert str(MetaKey(MetaKind.MERGED_SHARDS, "a/b")) == "merged-shards:a/b"
