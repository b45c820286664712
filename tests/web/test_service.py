"""The whole app against respx-mocked upstreams, with an injected clock: revalidation, variants,
stale-if-error, negative caching, verification and URL rewriting, without sleeping."""

from __future__ import annotations

import bz2
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import msgspec
import pytest
import respx
import zstandard
from starlette.testclient import TestClient

from condaproxy.cache.transfer import ClientAbort
from condaproxy.rules.codecs import zstd_decompress
from condaproxy.settings import CacheSettings, ChannelSettings, Secret, Settings, UpstreamSettings
from condaproxy.web.app import create_app

UP = "https://up.example/cf"
TOKEN = "tok-abcdef-123456"
PKG = b"conda package bytes " * 100
PKG_SHA = hashlib.sha256(PKG).hexdigest()


def repodata(extra_pkgs: dict | None = None, info: dict | None = None) -> bytes:
    pkgs = {
        "pkg-1.0-0.conda": {
            "name": "pkg",
            "version": "1.0",
            "build": "0",
            "build_number": 0,
            "sha256": PKG_SHA,
            "size": len(PKG),
            "depends": [],
        }
    }
    return msgspec.json.encode(
        {
            "info": info or {"subdir": "linux-64"},
            "packages": {},
            "packages.conda": {**pkgs, **(extra_pkgs or {})},
            "repodata_version": 1,
        }
    )


def listed(router, subdir: str, files: dict[str, bytes]) -> None:
    """The upstream's repodata for `subdir` lists `files` (no shards)."""
    records = {
        fn: {
            "name": fn.rsplit("-", 2)[0],
            "version": "1.0",
            "build": "0",
            "build_number": 0,
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }
        for fn, data in files.items()
    }
    document = msgspec.json.encode(
        {"info": {"subdir": subdir}, "packages": {}, "packages.conda": records}
    )
    router.get(f"{UP}/{subdir}/repodata_shards.msgpack.zst").respond(404)
    router.get(f"{UP}/{subdir}/repodata.json.zst").respond(
        200, content=zstandard.compress(document)
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mocked:
        yield mocked


@pytest.fixture
def client(tmp_path: Path, clock: Clock, router) -> Iterator[TestClient]:
    settings = Settings(
        cache=CacheSettings(path=tmp_path / "cache", repodata_ttl=60, negative_ttl=30),
        upstream=UpstreamSettings(connect_timeout=1, read_timeout=1),
        channels={
            "cf": ChannelSettings("cf", UP),
            "priv": ChannelSettings("priv", "https://up.example/org", upstream_token=Secret(TOKEN)),
        },
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        yield c


def test_repodata_is_revalidated_with_the_upstream_etag(client, router, clock):
    route = router.get(f"{UP}/linux-64/repodata.json.zst").respond(
        200, content=zstandard.compress(repodata()), headers={"etag": '"u1"'}
    )
    first = client.get("/cf/linux-64/repodata.json")
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    assert first.json()["packages.conda"]["pkg-1.0-0.conda"]["sha256"] == PKG_SHA
    assert first.headers["cache-control"] == "public, max-age=60"

    clock.now += 30
    hit = client.get("/cf/linux-64/repodata.json")
    assert hit.headers["x-cache"] == "HIT" and route.call_count == 1
    assert hit.headers["cache-control"] == "public, max-age=30"

    clock.now += 31
    route.respond(304, headers={"etag": '"u1"'})
    again = client.get("/cf/linux-64/repodata.json")
    assert again.headers["x-cache"] == "REVALIDATED"
    assert route.call_count == 2
    assert route.calls.last.request.headers["if-none-match"] == '"u1"'
    assert again.headers["etag"] == first.headers["etag"]
    assert again.content == first.content
    assert again.headers["cache-control"] == "public, max-age=60", "a 304 resets the clock"


def test_every_variant_describes_the_same_snapshot(client, router, clock):
    # An upstream without a current_repodata.json of its own: the full snapshot stands in.
    router.get(f"{UP}/noarch/current_repodata.json").respond(404)
    route = router.get(f"{UP}/noarch/repodata.json.zst").respond(
        200,
        content=zstandard.compress(repodata(info={"subdir": "noarch"})),
        headers={"etag": '"a"'},
    )
    urls = ["repodata.json", "repodata.json.zst", "repodata.json.bz2", "current_repodata.json"]
    bodies = {u: client.get(f"/cf/noarch/{u}") for u in urls}
    doc = bodies["repodata.json"].content
    assert zstd_decompress(bodies["repodata.json.zst"].content) == doc
    assert bz2.decompress(bodies["repodata.json.bz2"].content) == doc
    assert bodies["current_repodata.json"].content == doc
    etags = {r.headers["etag"] for r in bodies.values()}
    assert len(etags) == 4, "each variant has its own strong ETag"
    assert route.call_count == 1

    # The upstream changes: every variant moves to the new snapshot together.
    clock.now += 120
    newer = repodata(
        extra_pkgs={
            "new-2.0-0.conda": {"name": "new", "version": "2.0", "build": "0", "build_number": 0}
        },
        info={"subdir": "noarch"},
    )
    route.respond(200, content=zstandard.compress(newer), headers={"etag": '"b"'})
    fresh = {u: client.get(f"/cf/noarch/{u}") for u in urls}
    assert fresh["repodata.json"].content == newer
    assert zstd_decompress(fresh["repodata.json.zst"].content) == newer
    assert bz2.decompress(fresh["repodata.json.bz2"].content) == newer
    assert all(fresh[u].headers["etag"] != bodies[u].headers["etag"] for u in urls)


def test_upstream_without_zst_still_gets_a_zst(client, router):
    router.get(f"{UP}/linux-64/repodata.json.zst").respond(404)
    router.get(f"{UP}/linux-64/repodata.json").respond(
        200, content=repodata(), headers={"etag": '"j"'}
    )
    zst = client.get("/cf/linux-64/repodata.json.zst")
    assert zst.status_code == 200
    assert zstd_decompress(zst.content) == repodata()


def test_client_conditionals_head_and_ranges(client, router):
    router.get(f"{UP}/linux-64/repodata.json.zst").respond(
        200, content=zstandard.compress(repodata())
    )
    got = client.get("/cf/linux-64/repodata.json.zst")
    head = client.head("/cf/linux-64/repodata.json.zst")
    assert head.status_code == 200 and head.content == b""
    for name in ("etag", "content-length", "content-type", "last-modified"):
        assert head.headers[name] == got.headers[name]
    assert (
        client.get(
            "/cf/linux-64/repodata.json.zst", headers={"if-none-match": got.headers["etag"]}
        ).status_code
        == 304
    )
    assert (
        client.get(
            "/cf/linux-64/repodata.json.zst", headers={"if-none-match": '"other"'}
        ).status_code
        == 200
    )
    part = client.get("/cf/linux-64/repodata.json.zst", headers={"range": "bytes=-10"})
    assert part.status_code == 206 and part.content == got.content[-10:]


def test_stale_if_error_then_502_or_504_without_a_copy(client, router, clock):
    route = router.get(f"{UP}/linux-64/repodata.json.zst").respond(
        200, content=zstandard.compress(repodata())
    )
    client.get("/cf/linux-64/repodata.json")
    clock.now += 3600
    route.respond(503)
    stale = client.get("/cf/linux-64/repodata.json")
    assert stale.status_code == 200
    assert stale.headers["x-cache"] == "STALE"
    assert stale.headers["warning"].startswith("110")
    assert stale.headers["cache-control"] == "public, max-age=0"

    router.get(f"{UP}/osx-64/repodata.json.zst").respond(503)
    failed = client.get("/cf/osx-64/repodata.json")
    assert failed.status_code == 502
    assert f"{UP}/osx-64/repodata.json.zst" in failed.json()["error"]
    router.get(f"{UP}/win-64/repodata.json.zst").mock(side_effect=httpx.ConnectTimeout("t"))
    assert client.get("/cf/win-64/repodata.json").status_code == 504


def test_shard_index_failure_without_copy_is_404_so_clients_fall_back(client, router):
    router.get(f"{UP}/linux-64/repodata_shards.msgpack.zst").respond(500)
    response = client.get("/cf/linux-64/repodata_shards.msgpack.zst")
    assert response.status_code == 404


def test_upstream_404_is_remembered_briefly(client, router, clock):
    listed(router, "linux-64", {})
    route = router.get(f"{UP}/linux-64/gone-1.0-0.conda").respond(404)
    assert client.get("/cf/linux-64/gone-1.0-0.conda").status_code == 404
    assert client.get("/cf/linux-64/gone-1.0-0.conda").status_code == 404
    assert route.call_count == 1
    clock.now += 31
    assert client.get("/cf/linux-64/gone-1.0-0.conda").status_code == 404
    assert route.call_count == 2


def test_package_verified_against_repodata_and_cached(client, router):
    router.get(f"{UP}/linux-64/repodata.json.zst").respond(
        200, content=zstandard.compress(repodata())
    )
    client.get("/cf/linux-64/repodata.json")
    route = router.get(f"{UP}/linux-64/pkg-1.0-0.conda").respond(200, content=PKG)
    first = client.get("/cf/linux-64/pkg-1.0-0.conda")
    assert first.content == PKG and first.headers["etag"] == f'"{PKG_SHA}"'
    # The file is made durable after the first client's last byte: until then a second client
    # joins that download (COALESCED), afterwards it is a plain hit; never a second fetch.
    second = client.get("/cf/linux-64/pkg-1.0-0.conda")
    assert second.headers["x-cache"] in ("HIT", "COALESCED") and second.content == PKG
    deadline = time.monotonic() + 10
    while (third := client.get("/cf/linux-64/pkg-1.0-0.conda")).headers["x-cache"] != "HIT":
        assert time.monotonic() < deadline, "never committed"
        time.sleep(0.01)
    assert third.content == PKG
    assert route.call_count == 1


def test_corrupt_package_is_aborted_and_never_cached(client, router):
    router.get(f"{UP}/linux-64/repodata.json.zst").respond(
        200, content=zstandard.compress(repodata())
    )
    client.get("/cf/linux-64/repodata.json")
    bad = b"X" + PKG[1:]
    route = router.get(f"{UP}/linux-64/pkg-1.0-0.conda").respond(200, content=bad)
    # The server aborts the response: no complete body reaches the client.
    with pytest.raises(ClientAbort, match=r"sha256 .* differs"):
        client.get("/cf/linux-64/pkg-1.0-0.conda")
    route.respond(200, content=PKG)
    good = client.get("/cf/linux-64/pkg-1.0-0.conda")
    assert good.status_code == 200 and good.content == PKG and good.headers["x-cache"] == "MISS"
    assert route.call_count == 2


def test_wrong_size_is_refused_before_any_body(client, router):
    router.get(f"{UP}/linux-64/repodata.json.zst").respond(
        200, content=zstandard.compress(repodata())
    )
    client.get("/cf/linux-64/repodata.json")
    router.get(f"{UP}/linux-64/pkg-1.0-0.conda").respond(200, content=PKG + b"extra")
    response = client.get("/cf/linux-64/pkg-1.0-0.conda")
    assert response.status_code == 502
    assert "differs from the" in response.json()["error"]


def test_expected_sha256_header_from_rattler_is_checked(client, router):
    listed(router, "noarch", {})
    router.get(f"{UP}/noarch/lock-1.0-0.conda").respond(200, content=PKG)
    bad = client.get("/cf/noarch/lock-1.0-0.conda", headers={"x-expected-sha256": "zz"})
    assert bad.status_code == 400 and "X-Expected-Sha256" in bad.json()["error"]
    ok = client.get("/cf/noarch/lock-1.0-0.conda", headers={"x-expected-sha256": PKG_SHA})
    assert ok.status_code == 200 and ok.content == PKG


def test_unlisted_files_are_served_but_never_cached(client, router):
    """Nothing verifies a file no record lists (removed builds, lockfile URLs): it is streamed,
    and never kept."""
    listed(router, "noarch", {"kept-1.0-0.conda": PKG})
    route = router.get(f"{UP}/noarch/removed-0.1-0.tar.bz2").respond(200, content=b"old bytes")
    assert client.get("/cf/noarch/removed-0.1-0.tar.bz2").content == b"old bytes"
    again = client.get("/cf/noarch/removed-0.1-0.tar.bz2")
    assert again.content == b"old bytes" and again.headers["x-cache"] == "MISS"
    assert route.call_count == 2
    # Unverified bytes: no cache in front may keep them (a listed file is immutable for a year).
    assert again.headers["cache-control"] == "no-store"
    router.get(f"{UP}/noarch/kept-1.0-0.conda").respond(200, content=PKG)
    kept = client.get("/cf/noarch/kept-1.0-0.conda")
    assert kept.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_cached_package_ranges_if_range_and_416(client, router):
    listed(router, "noarch", {"r-1.0-0.conda": PKG})
    router.get(f"{UP}/noarch/r-1.0-0.conda").respond(200, content=PKG)
    client.get("/cf/noarch/r-1.0-0.conda")
    full = client.get("/cf/noarch/r-1.0-0.conda")
    etag = full.headers["etag"]
    resumed = client.get("/cf/noarch/r-1.0-0.conda", headers={"range": "bytes=100-"})
    assert resumed.status_code == 206 and resumed.content == PKG[100:]
    assert resumed.headers["content-range"] == f"bytes 100-{len(PKG) - 1}/{len(PKG)}"
    same = client.get("/cf/noarch/r-1.0-0.conda", headers={"range": "bytes=-5", "if-range": etag})
    assert same.status_code == 206 and same.content == PKG[-5:]
    changed = client.get(
        "/cf/noarch/r-1.0-0.conda", headers={"range": "bytes=-5", "if-range": '"x"'}
    )
    assert changed.status_code == 200 and changed.content == PKG
    beyond = client.get("/cf/noarch/r-1.0-0.conda", headers={"range": f"bytes={len(PKG)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(PKG)}"
    assert client.head("/cf/noarch/r-1.0-0.conda").headers["content-length"] == str(len(PKG))


def test_absolute_base_url_is_rewritten_and_packages_come_from_there(client, router):
    info = {"subdir": "linux-64", "base_url": "https://cdn.example/files/linux-64/"}
    router.get(f"{UP}/linux-64/repodata.json.zst").respond(404)
    router.get(f"{UP}/linux-64/repodata.json").respond(
        200,
        content=msgspec.json.encode(
            {**msgspec.json.decode(repodata()), "info": info, "repodata_version": 2}
        ),
    )
    served = client.get("/cf/linux-64/repodata.json").json()
    assert "base_url" not in served["info"] and served["repodata_version"] == 2
    cdn = router.get("https://cdn.example/files/linux-64/pkg-1.0-0.conda").respond(200, content=PKG)
    assert client.get("/cf/linux-64/pkg-1.0-0.conda").content == PKG
    assert cdn.call_count == 1


def test_shard_index_is_rewritten_and_shards_are_verified(client, router):
    shard = zstandard.compress(msgpack.packb({"packages": {}, "packages.conda": {}, "removed": []}))
    digest = hashlib.sha256(shard).hexdigest()
    index = {
        "version": 1,
        "info": {
            "subdir": "noarch",
            "base_url": "https://files.example/noarch/",
            "shards_base_url": "https://shards.example/cf/noarch/",
        },
        "shards": {"pkg": bytes.fromhex(digest)},
    }
    router.get(f"{UP}/noarch/repodata_shards.msgpack.zst").respond(
        200, content=zstandard.compress(msgpack.packb(index))
    )
    served = msgpack.unpackb(
        zstd_decompress(client.get("/cf/noarch/repodata_shards.msgpack.zst").content)
    )
    assert served["info"]["base_url"] == "./" and served["info"]["shards_base_url"] == "./shards/"
    assert served["shards"] == index["shards"]
    origin = router.get(f"https://shards.example/cf/noarch/{digest}.msgpack.zst").respond(
        200, content=shard
    )
    assert client.get(f"/cf/noarch/shards/{digest}.msgpack.zst").content == shard
    assert origin.call_count == 1
    other = "00" * 32
    router.get(f"https://shards.example/cf/noarch/{other}.msgpack.zst").respond(200, content=shard)
    with pytest.raises(ClientAbort, match="differs from 0000"):  # bytes must hash to the name
        client.get(f"/cf/noarch/shards/{other}.msgpack.zst")


@pytest.mark.parametrize(
    ("base", "shards"), [("", "./shards/"), ("./", "shards/"), (".", "./shards/")]
)
def test_a_shard_index_that_already_points_next_to_itself_is_served_as_the_upstreams_bytes(
    client, router, base: str, shards: str
):
    """Relative URLs (rattler's and conda-index's indexes) resolve to the proxy as they stand:
    the upstream's own bytes are served, nothing re-encoded on the path of the first client
    after a change."""
    index = {
        "version": 1,
        "info": {"subdir": "noarch", "base_url": base, "shards_base_url": shards},
        "shards": {"pkg": hashlib.sha256(b"x").digest()},
        "created_at": "2026-12-01",
    }
    body = zstandard.compress(msgpack.packb(index), 19)
    router.get(f"{UP}/noarch/repodata_shards.msgpack.zst").respond(200, content=body)
    got = client.get("/cf/noarch/repodata_shards.msgpack.zst")
    assert got.status_code == 200 and got.content == body


def test_a_rewritten_shard_index_keeps_every_other_key_and_shard(client, router):
    index = {
        "version": 1,
        "info": {
            "subdir": "noarch",
            "base_url": "../noarch/",  # the same place, but not a spelling passed as it is
            "shards_base_url": "/cf/noarch/shards/",
            "extra": [1, {"x": b"\0"}],
        },
        "shards": {f"pkg{i}": hashlib.sha256(bytes([i])).digest() for i in range(50)},
        "created_at": "2026-12-01T00:00:00Z",
        "future-key": {"nested": [1, 2.5, None, True]},
    }
    router.get(f"{UP}/noarch/repodata_shards.msgpack.zst").respond(
        200, content=zstandard.compress(msgpack.packb(index))
    )
    served = msgpack.unpackb(
        zstd_decompress(client.get("/cf/noarch/repodata_shards.msgpack.zst").content)
    )
    info = {**index["info"], "base_url": "./", "shards_base_url": "./shards/"}
    assert served == {**index, "info": info}


def test_token_path_reaches_the_upstream_but_never_the_client(client, router):
    route = router.get(f"https://up.example/t/{TOKEN}/org/noarch/repodata.json.zst").respond(500)
    response = client.get("/priv/noarch/repodata.json")
    assert route.call_count == 1
    assert response.status_code == 502
    assert TOKEN not in response.text and "/t/***/org" in response.text


def test_bad_paths_and_methods_get_json_errors(client):
    unknown = client.get("/nope/noarch/repodata.json")
    assert unknown.status_code == 404 and unknown.json()["channels"] == ["cf", "priv"]
    assert client.get("/cf/noarch/index.html").status_code == 404
    post = client.post("/cf/noarch/repodata.json")
    assert post.status_code == 405 and "error" in post.json()
