"""What the proxy knows of a package before streaming a byte of it, in-process: the record
from a CEP-16 shard when no repodata is cached, from the repodata otherwise (revalidated once
when a stale snapshot may predate the file), nothing for a file no one lists; and what follows
from it (a HEAD answered from the record, a 409 for a client expecting other bytes)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx
import zstandard
from starlette.testclient import TestClient

from condaproxy.settings import ChannelSettings
from condaproxy.web.app import create_app
from tests.support.inproc import (
    Clock,
    make_settings,
    repodata,
    services_of,
    shard_index,
    upstream_subdir,
)

UP = "https://up.example/cf"
FILES = {"pkg-1.0-0.conda": b"p" * 800, "other-2.0-0.conda": b"o" * 600}
SHA = {fn: hashlib.sha256(data).hexdigest() for fn, data in FILES.items()}


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mocked:
        yield mocked


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(tmp_path: Path, router, clock) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)], repodata_ttl=60)
    with TestClient(create_app(settings, clock=clock)) as c:
        yield c


def test_with_shards_a_package_is_checked_against_its_shard_alone(client, router):
    packages = upstream_subdir(router, UP, "linux-64", FILES, sharded=True)
    whole = router.get(f"{UP}/linux-64/repodata.json.zst")
    got = client.get("/cf/linux-64/pkg-1.0-0.conda")
    assert (
        got.content == FILES["pkg-1.0-0.conda"]
        and got.headers["etag"] == f'"{SHA["pkg-1.0-0.conda"]}"'
    )
    assert whole.call_count == 0, "the few KiB of a shard, not the whole repodata"
    assert client.get("/cf/linux-64/other-2.0-0.conda").content == FILES["other-2.0-0.conda"]
    client.portal.call(services_of(client.app).downloads.aclose)
    assert client.get("/cf/linux-64/pkg-1.0-0.conda").headers["x-cache"] == "HIT"
    assert packages["pkg-1.0-0.conda"].call_count == 1


def test_a_name_the_shard_index_lacks_is_unlisted_and_not_kept(client, router):
    upstream_subdir(router, UP, "linux-64", FILES, sharded=True)
    route = router.get(f"{UP}/linux-64/stray-1.0-0.conda").respond(200, content=b"stray")
    for _ in range(2):
        got = client.get("/cf/linux-64/stray-1.0-0.conda")
        assert got.content == b"stray" and got.headers["x-cache"] == "MISS"
    assert route.call_count == 2


def test_a_shard_that_cannot_be_read_is_an_upstream_error(client, router):
    junk = b"not zstd at all"
    router.get(f"{UP}/linux-64/repodata_shards.msgpack.zst").respond(
        200, content=shard_index("linux-64", {"pkg": junk})
    )
    digest = hashlib.sha256(junk).hexdigest()
    router.get(f"{UP}/linux-64/shards/{digest}.msgpack.zst").respond(200, content=junk)
    answer = client.get("/cf/linux-64/pkg-1.0-0.conda")
    assert answer.status_code == 502 and "unusable shard" in answer.json()["error"]


def test_a_stale_snapshot_is_revalidated_once_for_a_file_it_does_not_list(client, router, clock):
    router.get(f"{UP}/linux-64/repodata_shards.msgpack.zst").respond(404)
    index = router.get(f"{UP}/linux-64/repodata.json.zst").respond(
        200, content=zstandard.compress(repodata("linux-64", {}))
    )
    assert client.get("/cf/linux-64/repodata.json").json()["packages.conda"] == {}
    newer = upstream_subdir(router, UP, "linux-64", FILES)  # the upstream publishes a package
    fresh = client.get("/cf/linux-64/pkg-1.0-0.conda")  # within the ttl: the snapshot decides
    assert fresh.headers["x-cache"] == "MISS" and index.call_count == 1
    clock.now += 61
    got = client.get("/cf/linux-64/pkg-1.0-0.conda")
    assert got.content == FILES["pkg-1.0-0.conda"]
    assert got.headers.get("etag") == f'"{SHA["pkg-1.0-0.conda"]}"', "checked against the record"
    assert newer["pkg-1.0-0.conda"].call_count == 2


def test_without_repodata_upstream_nothing_lists_the_file(client, router):
    for name in ("repodata_shards.msgpack.zst", "repodata.json.zst", "repodata.json"):
        router.get(f"{UP}/osx-64/{name}").respond(404)
    router.get(f"{UP}/osx-64/pkg-1.0-0.conda").respond(200, content=b"whatever")
    got = client.get("/cf/osx-64/pkg-1.0-0.conda")
    assert got.content == b"whatever" and "etag" not in got.headers


def test_a_head_of_a_listed_package_is_answered_from_its_record(client, router):
    packages = upstream_subdir(router, UP, "noarch", FILES)
    head = client.head("/cf/noarch/pkg-1.0-0.conda")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(FILES["pkg-1.0-0.conda"]))
    assert head.headers["etag"] == f'"{SHA["pkg-1.0-0.conda"]}"'
    assert packages["pkg-1.0-0.conda"].call_count == 0


@pytest.mark.parametrize("cached", [False, True])
def test_a_client_expecting_other_bytes_than_the_record_gets_a_409(client, router, cached):
    upstream_subdir(router, UP, "noarch", FILES)
    if cached:
        client.get("/cf/noarch/pkg-1.0-0.conda")
        client.portal.call(services_of(client.app).downloads.aclose)
    answer = client.get("/cf/noarch/pkg-1.0-0.conda", headers={"x-expected-sha256": "A" * 64})
    assert answer.status_code == 409
    assert answer.json()["published_sha256"] == SHA["pkg-1.0-0.conda"]
    upper = client.get(
        "/cf/noarch/pkg-1.0-0.conda", headers={"x-expected-sha256": SHA["pkg-1.0-0.conda"].upper()}
    )
    assert upper.status_code == 200, "hex digits in any case"


def test_a_blob_removed_behind_the_proxys_back_is_fetched_again(client, router):
    packages = upstream_subdir(router, UP, "noarch", FILES)
    client.get("/cf/noarch/pkg-1.0-0.conda")
    services = services_of(client.app)
    client.portal.call(services.downloads.aclose)
    os.unlink(services.store.location(SHA["pkg-1.0-0.conda"]))
    again = client.get("/cf/noarch/pkg-1.0-0.conda")
    assert again.content == FILES["pkg-1.0-0.conda"] and again.headers["x-cache"] == "MISS"
    assert packages["pkg-1.0-0.conda"].call_count == 2
