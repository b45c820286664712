"""The policy's view of a repodata document, pure: publish times (backfill at the first sync,
first seen afterwards, the upstream's indexed_timestamp when later), indexed_timestamp on every
served record, held records cut out, the rest of the document untouched."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from condaproxy.rules.policy import compile_policy
from condaproxy.rules.policy_view import filter_repodata

NOW = 1_800_000_000.0
DAY = 86400.0
MS = int(NOW * 1000)
POLICY = compile_policy("7d", ("evil",), (), {"openssl": "0"}, {})


def doc(records: dict[str, Any], **top: Any) -> bytes:
    return msgspec.json.encode(
        {"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": records, **top}
    )


def rec(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "version": "1.0", "build": "0", **fields}


def served(result: Any) -> dict[str, Any]:
    return msgspec.json.decode(result.document)["packages.conda"]


@pytest.mark.parametrize(
    ("fields", "first_seen"),
    [
        ({"indexed_timestamp": MS - 10_000}, MS - 10_000),  # the upstream's own time
        ({"timestamp": MS - 5 * 86_400_000}, MS - 5 * 86_400_000),  # build time, ms
        ({"timestamp": int(NOW) - 3600}, MS - 3_600_000),  # build time written in seconds
        ({"timestamp": MS + 86_400_000}, MS),  # a build time in the future: clamped to now
        ({}, 0),  # nothing known: present before the proxy looked
        ({"timestamp": "yesterday"}, 0),
        ({"timestamp": True}, 0),
        ({"timestamp": -5}, 0),
    ],
)
def test_first_sync_backfills_from_indexed_then_clamped_build_time(
    fields: dict[str, Any], first_seen: int
) -> None:
    result = filter_repodata(
        doc({"a-1.0-0.conda": rec("a", **fields)}), None, POLICY, "c", "noarch", NOW
    )
    assert result.first_seen == {"a-1.0-0.conda": first_seen}


def test_after_the_first_sync_a_new_file_is_first_seen_now_whatever_its_build_time() -> None:
    known = {"a-1.0-0.conda": 0}
    records = {
        "a-1.0-0.conda": rec("a"),
        "a-2.0-0.conda": rec("a", version="2.0", timestamp=1_000_000_000_000),
    }
    result = filter_repodata(doc(records), known, POLICY, "c", "noarch", NOW)
    assert result.first_seen["a-2.0-0.conda"] == MS
    assert set(served(result)) == {"a-1.0-0.conda"}
    assert result.held["a-2.0-0.conda"] == ("cooldown", "policy.cooldown = 7d", NOW + 7 * DAY)
    assert result.next_release == NOW + 7 * DAY


def test_a_later_upstream_indexed_timestamp_extends_the_hold() -> None:
    known = {"a-1.0-0.conda": int((NOW - 30 * DAY) * 1000)}
    records = {"a-1.0-0.conda": rec("a", indexed_timestamp=int((NOW - DAY) * 1000))}
    result = filter_repodata(doc(records), known, POLICY, "c", "noarch", NOW)
    assert result.held["a-1.0-0.conda"][2] == NOW + 6 * DAY


def test_every_served_record_carries_indexed_timestamp_and_keeps_its_bytes() -> None:
    records = {
        "a-1.0-0.conda": rec("a", depends=["b >=1"], extra={"x": [1, 2]}),
        "b-1.0-0.conda": rec("b", indexed_timestamp=123),
        "c-1.0-0.conda": {},
    }
    result = filter_repodata(
        doc(records, removed=["old-1-0.conda"], v3={"k": 1}),
        {"a-1.0-0.conda": 5, "b-1.0-0.conda": 5, "c-1.0-0.conda": 7},
        POLICY,
        "c",
        "noarch",
        NOW,
    )
    document = msgspec.json.decode(result.document)
    assert document["removed"] == ["old-1-0.conda"] and document["v3"] == {"k": 1}
    out = document["packages.conda"]
    assert out["a-1.0-0.conda"] == {**records["a-1.0-0.conda"], "indexed_timestamp": 5}
    assert out["b-1.0-0.conda"] == records["b-1.0-0.conda"]  # the upstream's own, untouched
    assert out["c-1.0-0.conda"] == {"indexed_timestamp": 7}


def test_removed_files_are_known_from_the_first_sync() -> None:
    result = filter_repodata(doc({}, removed=["x-1-0.conda", 3]), None, POLICY, "c", "noarch", NOW)
    assert result.first_seen == {"x-1-0.conda": 0}


@pytest.mark.parametrize("hostile", [[1, 2], "text", 7, None])
def test_a_record_that_is_not_an_object_is_judged_as_nameless_and_kept_as_is(
    hostile: Any,
) -> None:
    result = filter_repodata(
        doc({"a-1.0-0.conda": hostile}), {"a-1.0-0.conda": 0}, POLICY, "c", "noarch", NOW
    )
    assert served(result) == {"a-1.0-0.conda": hostile}


def test_deny_exemption_and_uploads_in_one_document() -> None:
    records = {
        "evil-1.0-0.conda": rec("evil"),
        "openssl-3.0-0.conda": rec("openssl"),
        "mine-1.0-0.conda": rec("mine"),
        "young-1.0-0.conda": rec("young"),
    }
    result = filter_repodata(
        doc(records), {}, POLICY, "c", "noarch", NOW, local=["mine-1.0-0.conda"]
    )
    assert set(served(result)) == {"openssl-3.0-0.conda", "mine-1.0-0.conda"}
    assert result.held["evil-1.0-0.conda"][0] == "deny"
    assert result.held["young-1.0-0.conda"][0] == "cooldown"
