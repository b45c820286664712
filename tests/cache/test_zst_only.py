"""A snapshot is stored as its .zst alone (issue 14: disk written per upstream change): the JSON
document is made from it once per snapshot, only when a reader needs it (a client without zstd
or gzip, a merge, a record lookup), and a big snapshot's package misses are checked against
the package's own shard instead of decompressing the whole document for one record."""

from __future__ import annotations

import httpx
import msgspec
import pytest
import respx

from condaproxy.cache.transfer import ClientAbort
from condaproxy.cache.workers import BIG
from condaproxy.settings import ChannelSettings
from condaproxy.storage.keys import MetaKey
from condaproxy.web.app import create_app
from tests.support.inproc import (
    Clock,
    make_settings,
    record,
    repodata,
    running,
    services_of,
    upstream_subdir,
)

UP = "https://up.example/cf"
PKG = b"package bytes " * 100


@pytest.fixture
def router():
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mocked:
        yield mocked


def filler(count: int) -> dict[str, dict[str, object]]:
    """Records of packages nobody asks for, enough to make the document `count` records big."""
    return {
        f"fill-1.{i}-0.conda": {**record(f"fill-1.{i}-0.conda", b"x"), "size": 1000 + i}
        for i in range(count)
    }


def stored_variants(app, subdir: str) -> set[str]:  # type: ignore[no-untyped-def]
    entry = services_of(app).index.get_meta(MetaKey.repodata(f"cf/{subdir}"))
    assert entry is not None
    return set(entry.variants)


async def test_a_snapshot_keeps_only_its_zst_until_a_client_reads_the_json(tmp_path, router):
    files = {"tool-1.0-0.conda": PKG}
    upstream_subdir(router, UP, "linux-64", files)
    document = repodata("linux-64", {fn: record(fn, data) for fn, data in files.items()})
    settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)])
    app = create_app(settings, clock=Clock())
    async with running(app) as client:
        zst = await client.get("/cf/linux-64/repodata.json.zst")
        assert zst.status_code == 200
        assert stored_variants(app, "linux-64") == {"zst"}
        # A client that takes zstd gets the .zst bytes as the coding: still no JSON on disk.
        coded = await client.get("/cf/linux-64/repodata.json", headers={"accept-encoding": "zstd"})
        assert coded.headers["content-encoding"] == "zstd"
        assert stored_variants(app, "linux-64") == {"zst"}
        # One that takes nothing gets the document itself, made once from the .zst.
        plain = await client.get(
            "/cf/linux-64/repodata.json", headers={"accept-encoding": "identity"}
        )
        assert plain.status_code == 200 and "content-encoding" not in plain.headers
        assert msgspec.json.decode(plain.content) == msgspec.json.decode(document)
        assert plain.headers["content-length"] == str(len(plain.content))
        assert stored_variants(app, "linux-64") == {"zst", "json"}
        again = await client.get(
            "/cf/linux-64/repodata.json", headers={"accept-encoding": "identity"}
        )
        assert again.content == plain.content and again.headers["etag"] == plain.headers["etag"]


async def test_a_big_snapshots_package_miss_reads_its_shard_not_the_whole_document(
    tmp_path, router
):
    files = {"tool-1.0-0.conda": PKG}
    routes = upstream_subdir(router, UP, "linux-64", files, sharded=True, extra=filler(60_000))
    settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)])
    app = create_app(settings, clock=Clock())
    async with running(app) as client:
        assert (await client.get("/cf/linux-64/repodata.json.zst")).status_code == 200
        entry = services_of(app).index.get_meta(MetaKey.repodata("cf/linux-64"))
        assert entry is not None and entry.variants["zst"].inflated > BIG
        # The shard's record is the one checked: tampered bytes never complete, nothing kept.
        routes["tool-1.0-0.conda"].respond(200, content=b"tampered" + PKG[8:])
        try:
            tampered = await client.get("/cf/linux-64/tool-1.0-0.conda")
        except (httpx.HTTPError, ClientAbort):  # the transfer is cut before its last byte
            pass
        else:
            assert tampered.content != b"tampered" + PKG[8:], "tampered bytes completed"
        routes["tool-1.0-0.conda"].respond(200, content=PKG)
        package = await client.get("/cf/linux-64/tool-1.0-0.conda")
        assert package.status_code == 200 and package.content == PKG
        assert package.headers["x-cache"] == "MISS"
        assert stored_variants(app, "linux-64") == {"zst"}, "no JSON made for one record"


async def test_a_small_snapshots_package_miss_needs_no_shard_index(tmp_path, router):
    files = {"tool-1.0-0.conda": PKG}
    upstream_subdir(router, UP, "linux-64", files)  # the shard index is a 404 here
    settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)])
    app = create_app(settings, clock=Clock())
    async with running(app) as client:
        assert (await client.get("/cf/linux-64/repodata.json.zst")).status_code == 200
        package = await client.get("/cf/linux-64/tool-1.0-0.conda")
        assert package.status_code == 200 and package.content == PKG
        shard_index = [r for r in router.routes if "repodata_shards" in str(r.pattern)]
        assert all(r.call_count == 0 for r in shard_index)
