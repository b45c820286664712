"""current_repodata.json (conda's classic solver): the upstream's own subset passes through,
revalidated like repodata, with a .zst beside it; without one, the full snapshot serves."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import respx
import zstandard

from condaproxy.settings import ChannelSettings
from condaproxy.web.app import create_app
from tests.support.inproc import Clock, make_settings, running

UP = "https://up.example/cf"


def document(*versions: str) -> bytes:
    records = {
        f"tool-{v}-0.conda": {"name": "tool", "version": v, "build": "0", "build_number": 0}
        for v in versions
    }
    return msgspec.json.encode(
        {"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": records}
    )


FULL = document("1.0", "2.0", "3.0")
CURRENT = document("3.0")


@pytest.fixture
def router():
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mocked:
        mocked.get(f"{UP}/noarch/repodata_shards.msgpack.zst").respond(404)
        mocked.get(f"{UP}/noarch/repodata.json.zst").respond(200, content=zstandard.compress(FULL))
        yield mocked


async def test_the_upstreams_own_current_repodata_passes_through(tmp_path: Path, router):
    route = router.get(f"{UP}/noarch/current_repodata.json").respond(
        200, content=CURRENT, headers={"etag": '"c1"'}
    )
    settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)], repodata_ttl=60)
    async with running(create_app(settings, clock=Clock())) as client:
        plain = await client.get("/cf/noarch/current_repodata.json")
        assert plain.status_code == 200 and plain.content == CURRENT
        packed = await client.get("/cf/noarch/current_repodata.json.zst")
        assert packed.headers["content-type"] == "application/zstd"
        assert zstandard.ZstdDecompressor().decompressobj().decompress(packed.content) == CURRENT
        assert plain.headers["etag"] != packed.headers["etag"]
        again = await client.get(
            "/cf/noarch/current_repodata.json", headers={"if-none-match": plain.headers["etag"]}
        )
        assert again.status_code == 304
        assert route.call_count == 1


async def test_without_one_upstream_the_full_snapshot_serves(tmp_path: Path, router):
    router.get(f"{UP}/noarch/current_repodata.json").respond(404)
    settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)])
    async with running(create_app(settings, clock=Clock())) as client:
        plain = await client.get("/cf/noarch/current_repodata.json")
        assert plain.status_code == 200 and plain.content == FULL
        packed = await client.get("/cf/noarch/current_repodata.json.zst")
        assert packed.status_code == 200
        assert zstandard.ZstdDecompressor().decompressobj().decompress(packed.content) == FULL
