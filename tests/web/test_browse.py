"""`GET /<channel>/` and `GET /<channel>/<subdir>/`, in process: a channel browsed like a static
one, from its shard index or its repodata, paged and filtered, each file linked through the
proxy with its cached or uploaded state; and a subdir of conda-forge's size stays bounded in
time per page (the listing is made once per snapshot, never per view)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import msgpack
import msgspec
import pytest
import respx
import zstandard

from condaproxy.settings import ChannelSettings
from condaproxy.web.app import create_app
from tests.support.channel import Pkg
from tests.support.inproc import (
    Clock,
    built,
    make_settings,
    record,
    repodata,
    running,
    services_of,
    shard,
    token,
    until,
    upstream_subdir,
)

UP = "https://up.example/cf"
WRITE = "write-token-5678"
JSON = {"accept": "application/json"}


def settings_for(tmp_path: Path) -> Any:
    return make_settings(
        tmp_path / "cache",
        [ChannelSettings("cf", UP), ChannelSettings("team", UP)],
        [token("ci", WRITE, team="write")],
    )


@pytest.fixture
def router():
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mocked:
        yield mocked


def many(router: respx.MockRouter, count: int, sharded: bool) -> None:
    """An upstream linux-64 with `count` package names, two files each (a .conda and a
    .tar.bz2 of one stem), and a shard index if `sharded`; only the metadata is routed."""
    records = {}
    for i in range(count):
        for ext in (".conda", ".tar.bz2"):
            records[f"pkg{i:04d}-1.0-0{ext}"] = record(f"pkg{i:04d}-1.0-0{ext}", b"%d" % i)
    router.get(f"{UP}/linux-64/repodata.json.zst").respond(
        200, content=zstandard.compress(repodata("linux-64", records))
    )
    shards = router.get(f"{UP}/linux-64/repodata_shards.msgpack.zst")
    if sharded:
        digests = {f"pkg{i:04d}": hashlib.sha256(b"%d" % i).digest() for i in range(count)}
        index = {"version": 1, "info": {"subdir": "linux-64"}, "shards": digests}
        shards.respond(200, content=zstandard.compress(msgpack.packb(index)))
    else:
        shards.respond(404)


@pytest.mark.parametrize("sharded", [True, False], ids=["shards", "repodata"])
async def test_a_subdir_lists_its_names_200_a_page(tmp_path, router, sharded):
    many(router, 450, sharded)
    async with running(create_app(settings_for(tmp_path), clock=Clock())) as c:
        pages = [(await c.get(f"/cf/linux-64/?page={n}", headers=JSON)).json() for n in (1, 2, 3)]
        past = (await c.get("/cf/linux-64/?page=4", headers=JSON)).json()
        html = (await c.get("/cf/linux-64/?page=2")).text
        for bad in ("0", "-1", "x", "1e3", "99999999"):
            assert (await c.get(f"/cf/linux-64/?page={bad}")).status_code == 400
    assert [len(p["packages"]) for p in pages] == [200, 200, 50]
    assert [p["total"] for p in pages] == [450] * 3 and pages[0]["pages"] == 3
    names = [pkg["name"] for p in pages for pkg in p["packages"]]
    assert names == sorted(names) == [f"pkg{i:04d}" for i in range(450)]
    assert pages[0]["source"] == ("shards" if sharded else "repodata")
    if not sharded:  # repodata names each file: one stem, two formats, counted once
        assert {pkg["files"] for p in pages for pkg in p["packages"]} == {1}
    assert past["packages"] == []
    assert 'href="?name=pkg0200"' in html and 'href="?page=3"' in html and 'href="?page=1"' in html


@pytest.mark.parametrize("sharded", [True, False], ids=["shards", "repodata"])
async def test_a_name_prefix_filters_the_listing(tmp_path, router, sharded):
    many(router, 450, sharded)
    async with running(create_app(settings_for(tmp_path), clock=Clock())) as c:
        some = (await c.get("/cf/linux-64/?q=pkg02", headers=JSON)).json()
        none = (await c.get("/cf/linux-64/?q=zzz", headers=JSON)).json()
        html = (await c.get("/cf/linux-64/?q=pkg01&page=1")).text
        assert (await c.get("/cf/linux-64/?q=" + "x" * 101)).status_code == 400
    assert some["total"] == 100 and some["packages"][0]["name"] == "pkg0200"
    assert none["total"] == 0 and none["packages"] == []
    assert 'value="pkg01"' in html and "100 packages" in html


@pytest.mark.parametrize("sharded", [True, False], ids=["shards", "repodata"])
async def test_a_package_page_links_each_file_through_the_proxy(tmp_path, router, sharded):
    files = {
        "tool-1.0-0.conda": b"one" * 100,
        "tool-2.0-0.conda": b"two" * 100,
        "tool-extra-1.0-0.conda": b"another name that starts the same",
        "other-1.0-0.conda": b"x",
    }
    extra = {  # listed upstream, with fields a hostile upstream could send
        "tool-3.0-0.tar.bz2": {
            **record("tool-3.0-0.tar.bz2", b"3"),
            "size": "<b>big</b>",
            "sha256": ["<script>"],
            "timestamp": 1_700_000_000_000,
        }
    }
    upstream_subdir(router, UP, "noarch", files, sharded=sharded, extra=extra)
    async with running(create_app(settings_for(tmp_path), clock=Clock())) as c:
        index = services_of(c._transport.app).index  # type: ignore[attr-defined]
        await c.get("/cf/noarch/tool-1.0-0.conda")
        await until(lambda: index.get_file("cf/noarch/tool-1.0-0.conda") is not None)
        data = (await c.get("/cf/noarch/?name=tool", headers=JSON)).json()
        html = (await c.get("/cf/noarch/?name=tool")).text
        missing = await c.get("/cf/noarch/?name=nothere")
        bad = await c.get("/cf/noarch/?name=-x")
        link = await c.get("/cf/noarch/tool-2.0-0.conda")
    by_file = {f["filename"]: f for f in data["files"]}
    assert sorted(by_file) == ["tool-1.0-0.conda", "tool-2.0-0.conda", "tool-3.0-0.tar.bz2"]
    one = by_file["tool-1.0-0.conda"]
    assert one["cached"] is True and one["uploaded"] is False
    assert one["size"] == 300 and one["sha256"] == hashlib.sha256(b"one" * 100).hexdigest()
    assert one["url"] == "http://proxy.test/cf/noarch/tool-1.0-0.conda"
    assert by_file["tool-2.0-0.conda"]["cached"] is False
    hostile = by_file["tool-3.0-0.tar.bz2"]
    assert hostile["size"] is None and hostile["sha256"] is None
    assert hostile["timestamp"] == 1_700_000_000
    assert data["files"][0]["filename"] == "tool-3.0-0.tar.bz2"  # newest first
    assert 'href="tool-2.0-0.conda"' in html and "<b>" not in html and "<script" not in html
    assert missing.status_code == 404 and bad.status_code == 400
    assert link.status_code == 200 and link.content == files["tool-2.0-0.conda"]


async def test_uploads_are_listed_and_marked_as_uploaded(tmp_path, router):
    packages = built(tmp_path / "pkgs", Pkg("mytool", "1.0", "h0", "noarch"))
    ((filename, data),) = packages.items()
    upstream_subdir(router, UP, "noarch", {"tool-1.0-0.conda": b"t"}, sharded=True)
    async with running(create_app(settings_for(tmp_path), clock=Clock())) as c:
        up = await c.post(
            f"/api/channels/team/upload/{filename}",
            params={"sha256": hashlib.sha256(data).hexdigest()},
            content=data,
            headers={"x-api-key": WRITE},
        )
        assert up.status_code == 201, up.text
        names = (await c.get("/team/noarch/", headers=JSON)).json()
        files = (await c.get("/team/noarch/?name=mytool", headers=JSON)).json()
        channel = (await c.get("/team/", headers=JSON)).json()
    assert [p["name"] for p in names["packages"]] == ["mytool", "tool"]
    ((row,),) = [files["files"]]
    assert row["filename"] == filename and row["uploaded"] is True and row["cached"] is True
    noarch = next(s for s in channel["subdirs"] if s["subdir"] == "noarch")
    assert noarch["uploads"] == 1


async def test_a_channel_page_lists_its_subdirs(tmp_path, router):
    upstream_subdir(router, UP, "linux-64", {"tool-1.0-0.conda": b"t"}, sharded=True)
    async with running(create_app(settings_for(tmp_path), clock=Clock())) as c:
        assert (await c.get("/cf/linux-64/repodata_shards.msgpack.zst")).status_code == 200
        data = (await c.get("/cf/", headers=JSON)).json()
        html = (await c.get("/cf/")).text
        assert (await c.get("/cf/linux-64/x/")).status_code == 404
        assert (await c.get("/nochannel/")).status_code == 404
    subdirs = {s["subdir"]: s for s in data["subdirs"]}
    assert data["channel"] == "cf" and data["upstream"] == UP
    assert subdirs["linux-64"]["fetched"] and subdirs["linux-64"]["shards"]
    assert not subdirs["osx-arm64"]["fetched"]
    assert data["subdirs"][0]["subdir"] == "noarch"
    assert 'href="linux-64/"' in html and 'href="noarch/"' in html


# a subdir of conda-forge's size


def big_repodata(records: int, names: int) -> bytes:
    packages = {}
    for i in range(records):
        name, version = f"name{i % names:05d}", f"{i // names}.0"
        fn = f"{name}-{version}-h{i % 7}_0.conda"
        packages[fn] = {
            "name": name,
            "version": version,
            "build": f"h{i % 7}_0",
            "build_number": 0,
            "depends": ["python >=3.9", f"lib{i % 50} >=1.2", "numpy"],
            "sha256": hashlib.sha256(fn.encode()).hexdigest(),
            "size": 1000 + i,
            "timestamp": 1_700_000_000_000 + i,
        }
    return msgspec.json.encode(
        {"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": packages}
    )


def timed(seconds: float) -> Any:
    class Timer:
        def __enter__(self) -> Any:
            self.start = time.perf_counter()
            return self

        def __exit__(self, *exc: Any) -> None:
            self.took = time.perf_counter() - self.start
            assert self.took < seconds, f"took {self.took:.2f}s, allowed {seconds}s"

    return Timer()


async def test_pages_over_a_big_subdir_stay_bounded(tmp_path, router):
    document = big_repodata(200_000, 20_000)  # ~60 MB: half a conda-forge subdir
    router.get(f"{UP}/linux-64/repodata_shards.msgpack.zst").respond(404)
    router.get(f"{UP}/linux-64/repodata.json.zst").respond(
        200, content=zstandard.compress(document)
    )
    async with running(create_app(settings_for(tmp_path), clock=Clock())) as c:
        with timed(60):  # the proxy fetches and checks the document, then lists it once
            first = await c.get("/cf/linux-64/", headers=JSON)
        assert first.json()["total"] == 20_000
        for query in ("?page=50", "?q=name123", "?page=100", ""):
            with timed(0.5):
                page = await c.get(f"/cf/linux-64/{query}")
            assert page.status_code == 200 and len(page.content) < 200_000
        with timed(5):  # one name's files: a bounded scan, in the worker
            files = (await c.get("/cf/linux-64/?name=name01234", headers=JSON)).json()
        assert files["total"] == 10 and not files["truncated"]
        with timed(0.5):  # kept
            await c.get("/cf/linux-64/?name=name01234")


async def test_a_big_shard_index_is_listed_from_its_names_alone(tmp_path, router):
    one = shard({"name00042-1.0-0.conda": record("name00042-1.0-0.conda", b"x")})
    digests = {f"name{i:05d}": hashlib.sha256(b"%d" % i).digest() for i in range(25_000)}
    digests["name00042"] = hashlib.sha256(one).digest()
    index = {
        "version": 1,
        "info": {"subdir": "linux-64", "base_url": "./", "shards_base_url": "./shards/"},
        "shards": digests,
    }
    router.get(f"{UP}/linux-64/repodata_shards.msgpack.zst").respond(
        200, content=zstandard.compress(msgpack.packb(index))
    )
    shard_route = router.get(
        f"{UP}/linux-64/shards/{hashlib.sha256(one).hexdigest()}.msgpack.zst"
    ).respond(200, content=one)
    async with running(create_app(settings_for(tmp_path), clock=Clock())) as c:
        with timed(10):
            listed = (await c.get("/cf/linux-64/?page=125", headers=JSON)).json()
        with timed(0.5):
            await c.get("/cf/linux-64/?q=name2")
        with timed(5):
            files = (await c.get("/cf/linux-64/?name=name00042", headers=JSON)).json()
    assert listed["total"] == 25_000 and listed["packages"][-1]["name"] == "name24999"
    assert [f["filename"] for f in files["files"]] == ["name00042-1.0-0.conda"]
    assert shard_route.call_count == 1  # one shard fetched, no other (respx refuses others)


async def test_a_channel_name_with_slashes_is_browsed_by_relative_links(tmp_path, router):
    upstream_subdir(router, UP, "noarch", {"tool-1.0-0.conda": b"t"}, sharded=True)
    settings = make_settings(tmp_path / "cache", [ChannelSettings("org/team", UP)])
    async with running(create_app(settings, clock=Clock())) as c:
        root = (await c.get("/")).text
        channel = (await c.get("/org/team/")).text
        subdir = await c.get("/org/team/noarch/")
        package = (await c.get("/org/team/noarch/?name=tool")).text
        css = await c.get("/static/condaproxy.css")
    assert 'href="org/team/"' in root
    assert 'href="noarch/"' in channel and 'href="../../static/condaproxy.css"' in channel
    assert 'href="?name=tool"' in subdir.text and 'href="../"' in subdir.text
    assert 'href="tool-1.0-0.conda"' in package
    assert "http://proxy.test/org/team" in package and css.status_code == 200
