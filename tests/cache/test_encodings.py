"""repodata.json for every client, cheaply: the coding a client accepts (zstd: the snapshot's own
.zst bytes; gzip: made once per snapshot; else identity), `Vary: Accept-Encoding`, an ETag per
coding, HEAD exactly like GET; current_repodata.json the same."""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx
import msgspec
import pytest
import respx
import zstandard

from condaproxy.settings import ChannelSettings
from condaproxy.web.app import create_app
from tests.cache.test_derived import big_repodata
from tests.support.inproc import Clock, make_settings, running, services_of, until

UP = "https://up.example/cf"
DOC = msgspec.json.encode(
    {
        "info": {"subdir": "noarch"},
        "packages": {},
        "packages.conda": {
            "tool-1.0-0.conda": {"name": "tool", "version": "1.0", "build": "0", "build_number": 0}
        },
    }
)


@pytest.fixture
def router():
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mocked:
        mocked.get(f"{UP}/noarch/repodata_shards.msgpack.zst").respond(404)
        mocked.get(f"{UP}/noarch/current_repodata.json").respond(404)
        yield mocked


async def raw(client: httpx.AsyncClient, path: str, method: str = "GET", **headers: str):
    request = client.build_request(method, path, headers=headers)
    response = await client.send(request, stream=True)
    body = b"".join([chunk async for chunk in response.aiter_raw()])
    await response.aclose()
    return response, body


@pytest.mark.parametrize("path", ["repodata.json", "current_repodata.json"])
async def test_each_client_gets_the_coding_it_accepts_with_its_own_etag(
    tmp_path: Path, router, path
):
    router.get(f"{UP}/noarch/repodata.json.zst").respond(200, content=zstandard.compress(DOC))
    settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)])
    async with running(create_app(settings, clock=Clock())) as client:
        url = f"/cf/noarch/{path}"
        zstd, zbody = await raw(client, url, **{"accept-encoding": "gzip, zstd"})
        assert zstd.headers["content-encoding"] == "zstd"
        assert zstandard.ZstdDecompressor().decompressobj().decompress(zbody) == DOC
        gz, gbody = await raw(client, url, **{"accept-encoding": "gzip, deflate"})
        assert gz.headers["content-encoding"] == "gzip" and gzip.decompress(gbody) == DOC
        plain, pbody = await raw(client, url, **{"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers and pbody == DOC
        etags = {r.headers["etag"] for r in (zstd, gz, plain)}
        assert len(etags) == 3
        assert all(r.headers["vary"] == "Accept-Encoding" for r in (zstd, gz, plain))
        # A validator of one coding does not match another: no 304 for the wrong bytes.
        cross, _ = await raw(
            client, url, **{"accept-encoding": "identity", "if-none-match": gz.headers["etag"]}
        )
        assert cross.status_code == 200
        same, _ = await raw(
            client, url, **{"accept-encoding": "gzip", "if-none-match": gz.headers["etag"]}
        )
        assert same.status_code == 304
        head, hbody = await raw(client, url, "HEAD", **{"accept-encoding": "gzip"})
        assert hbody == b"" and head.headers["content-length"] == gz.headers["content-length"]
        assert head.headers["etag"] == gz.headers["etag"]


async def test_a_big_snapshot_is_gzipped_once_in_the_background(tmp_path: Path, router):
    document = big_repodata("1.0")
    router.get(f"{UP}/noarch/repodata.json.zst").respond(200, content=zstandard.compress(document))
    settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)])
    app = create_app(settings, clock=Clock())
    async with running(app) as client:
        first, body = await raw(client, "/cf/noarch/repodata.json", **{"accept-encoding": "gzip"})
        assert "content-encoding" not in first.headers and body == document  # identity meanwhile
        derived = services_of(app).packages.views.derived
        await until(lambda: not derived._tasks, timeout=60)
        later, body = await raw(client, "/cf/noarch/repodata.json", **{"accept-encoding": "gzip"})
        assert later.headers["content-encoding"] == "gzip" and gzip.decompress(body) == document
