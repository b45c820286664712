"""Derived variants (repodata.json.bz2) never stall anyone: a big snapshot's .bz2 is made in the
background (a 404 meanwhile), never for a HEAD, and made again right after each change for a
key whose clients asked for it; a small one is made on the spot (for a HEAD too)."""

from __future__ import annotations

import bz2
from pathlib import Path

import msgspec
import pytest
import respx
import zstandard

from condaproxy.cache.workers import BIG
from condaproxy.settings import ChannelSettings
from condaproxy.web.app import create_app
from tests.support.inproc import Clock, make_settings, running, services_of, until

UP = "https://up.example/cf"


def big_repodata(version: str) -> bytes:
    """A valid repodata document over BIG bytes (compressible, so the .zst stays small)."""
    records = {
        f"pkg{i}-{version}-0.conda": {
            "name": f"pkg{i}",
            "version": version,
            "build": "0",
            "build_number": 0,
            "depends": ["python >=3.9", "numpy"],
            "sha256": "ab" * 32,
            "size": 1000 + i,
        }
        for i in range(BIG // 180)
    }
    document = {"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": records}
    data = msgspec.json.encode(document)
    assert len(data) > BIG
    return data


@pytest.fixture
def router():
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mocked:
        mocked.get(f"{UP}/noarch/repodata_shards.msgpack.zst").respond(404)
        yield mocked


async def test_a_big_snapshot_bz2_is_made_in_the_background_never_on_the_request(
    tmp_path: Path, router
):
    document = big_repodata("1.0")
    route = router.get(f"{UP}/noarch/repodata.json.zst")
    route.respond(200, content=zstandard.compress(document), headers={"etag": '"v1"'})
    clock = Clock()
    settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)], repodata_ttl=60)
    app = create_app(settings, clock=clock)
    async with running(app) as client:
        head = await client.head("/cf/noarch/repodata.json.bz2")
        assert head.status_code == 404  # a HEAD asks, it never makes
        services = services_of(app)
        assert not services.packages.views.derived._tasks
        first = await client.get("/cf/noarch/repodata.json.bz2")
        assert first.status_code == 404 and "zst" in first.json()["error"]
        assert (await client.get("/cf/noarch/repodata.json.zst")).status_code == 200
        await until(lambda: not services.packages.views.derived._tasks, timeout=60)
        ready = await client.get("/cf/noarch/repodata.json.bz2")
        assert ready.status_code == 200 and bz2.decompress(ready.content) == document

        # The upstream changes: the wanted .bz2 is remade right after, without being asked.
        changed = big_repodata("2.0")
        route.respond(200, content=zstandard.compress(changed), headers={"etag": '"v2"'})
        clock.now += 61
        assert (await client.get("/cf/noarch/repodata.json.zst")).status_code == 200
        await until(lambda: not services.packages.views.derived._tasks, timeout=60)
        again = await client.get("/cf/noarch/repodata.json.bz2")
        assert again.status_code == 200 and bz2.decompress(again.content) == changed


async def test_a_small_snapshot_bz2_is_made_on_the_spot(tmp_path: Path, router):
    document = msgspec.json.encode(
        {"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": {}}
    )
    router.get(f"{UP}/noarch/repodata.json.zst").respond(200, content=zstandard.compress(document))
    settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)])
    async with running(create_app(settings, clock=Clock())) as client:
        response = await client.get("/cf/noarch/repodata.json.bz2")
        assert response.status_code == 200 and bz2.decompress(response.content) == document
