"""A file's record is read as a client reads it, in repodata and in shards alike: from the map
of its kind (`packages.conda` for a `.conda`, `packages` for a `.tar.bz2`), the last of
duplicate keys, escapes decoded; never from an object that only looks like it."""

from __future__ import annotations

import json

import pytest

from condaproxy.rules.merge import shard_records
from condaproxy.rules.records import find_record

REAL, FAKE = {"name": "b", "sha256": "11" * 32}, {"name": "b", "sha256": "ee" * 32}


@pytest.mark.parametrize("fn", ["b-1-0.conda", "b-1-0.tar.bz2"])
def test_the_map_of_its_kind_decides(fn: str) -> None:
    own, other = (
        ("packages.conda", "packages") if fn.endswith(".conda") else ("packages", "packages.conda")
    )
    for order in ((own, other), (other, own)):
        document = {order[0]: {}, order[1]: {}}
        document[own][fn], document[other][fn] = REAL, FAKE
        assert find_record(json.dumps(document).encode(), fn) == REAL, order
        assert shard_records(document)[fn] == REAL, order


def test_the_other_map_still_lists_a_file_its_own_does_not() -> None:
    document = {"packages": {"b-1-0.conda": REAL}, "packages.conda": {}}
    assert find_record(json.dumps(document).encode(), "b-1-0.conda") == REAL
    assert shard_records(document)["b-1-0.conda"] == REAL


@pytest.mark.parametrize(
    "raw",
    [
        b'{"packages.conda": {"a-1-0.conda": {"x": {"b-1-0.conda": FAKE}}, "b-1-0.conda": REAL}}',
        b'{"info": {"b-1-0.conda": FAKE}, "packages.conda": {"b-1-0.conda": REAL}}',
        b'{"packages.conda": {"b-1-0.conda": FAKE, "b-1-0.conda": REAL}}',
        b'{"packages.conda": {"a-1-0.conda": {"b-1-0.conda": FAKE}, "b-1-0\\u002econda": REAL}}',
    ],
)
def test_a_lookalike_is_no_record(raw: bytes) -> None:
    raw = raw.replace(b"FAKE", json.dumps(FAKE).encode()).replace(
        b"REAL", json.dumps(REAL).encode()
    )
    assert find_record(raw, "b-1-0.conda") == REAL


def test_a_file_only_inside_other_objects_is_unlisted() -> None:
    raw = json.dumps(
        {
            "info": {"b-1-0.conda": REAL},
            "packages.conda": {"a-1-0.conda": {"x": {"b-1-0.conda": REAL}}},
        }
    )
    assert find_record(raw.encode(), "b-1-0.conda") is None
    assert find_record(b"[1, 2]", "b-1-0.conda") is None
    assert find_record(b'{"packages.conda": []}', "b-1-0.conda") is None
    assert find_record(b'{"packages.conda": {"b-1-0.conda": null}}', "b-1-0.conda") is None
