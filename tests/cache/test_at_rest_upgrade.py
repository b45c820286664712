"""A merged or policy view stored by a version that recorded no content hash for it is made
again after an upgrade without an error saying the disk damaged it; anything else that fails
its check at rest is still reported as damage."""

from __future__ import annotations

import pytest

from condaproxy.cache.at_rest import unrecorded_view
from condaproxy.storage.index import MetaEntry, Variant
from condaproxy.storage.keys import MetaKey, MetaKind


def entry(content: str) -> MetaEntry:
    variant = Variant("a" * 64, 10, content=content)
    return MetaEntry("u", None, None, 0.0, 0.0, "d", variants={"zst": variant})


@pytest.mark.parametrize(
    "kind", [MetaKind.MERGED, MetaKind.MERGED_SHARDS, MetaKind.POLICY, MetaKind.POLICY_SHARDS]
)
def test_a_view_without_a_recorded_hash_is_an_upgrade(kind: MetaKind) -> None:
    assert unrecorded_view(MetaKey(kind, "team/linux-64"), entry(""))
    assert not unrecorded_view(MetaKey(kind, "team/linux-64"), entry("b" * 64))


@pytest.mark.parametrize("kind", [MetaKind.REPODATA, MetaKind.SHARD_INDEX, MetaKind.FILE])
def test_upstream_copies_named_by_content_are_damage(kind: MetaKind) -> None:
    assert not unrecorded_view(MetaKey(kind, "cf/linux-64"), entry(""))
