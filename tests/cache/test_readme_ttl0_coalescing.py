"""README "Repodata": "Many clients asking at once cause one upstream request", and
`repodata_ttl = 0` means "revalidate on every request". Both hold: clients that arrive while a
revalidation is in flight take its answer (the upstream gave it after they asked), instead of
queueing behind the lock for one upstream round trip each; a request that comes later still
revalidates."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import respx
import zstandard

from condaproxy.settings import ChannelSettings
from condaproxy.web.app import create_app
from tests.support.inproc import make_settings, record, repodata, running

UP = "https://up.example/cf"
PKG = b"p" * 200
ETAG = '"v1"'


async def test_clients_during_a_ttl0_revalidation_share_it(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)], repodata_ttl=0)
    body = zstandard.compress(repodata("noarch", {"p-1.0-0.conda": record("p-1.0-0.conda", PKG)}))
    asked: list[str | None] = []
    release = asyncio.Event()

    async def upstream(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("if-none-match"))
        if len(asked) == 2:  # the revalidation the concurrent clients arrive during
            await release.wait()
        if request.headers.get("if-none-match") == ETAG:
            return httpx.Response(304, headers={"etag": ETAG})
        return httpx.Response(200, content=body, headers={"etag": ETAG})

    with respx.mock(assert_all_called=False) as router:
        router.get(f"{UP}/noarch/repodata.json.zst").mock(side_effect=upstream)
        router.get(f"{UP}/noarch/repodata_shards.msgpack.zst").respond(404)
        async with running(create_app(settings)) as client:  # time moves: a 304 is news
            url = "/cf/noarch/repodata.json"
            assert (await client.get(url)).status_code == 200
            assert asked == [None]
            many = [asyncio.create_task(client.get(url)) for _ in range(10)]
            for _ in range(200):  # every client is in: one revalidating, nine behind it
                await asyncio.sleep(0.01)
                if len(asked) == 2:
                    break
            await asyncio.sleep(0.2)
            release.set()
            answers = await asyncio.wait_for(asyncio.gather(*many), 20)
            assert [a.status_code for a in answers] == [200] * 10
            assert asked == [None, ETAG], "clients of one moment cause one upstream request"
            # A request after that one is a new moment: ttl 0 revalidates it again.
            assert (await client.get(url)).status_code == 200
            assert asked == [None, ETAG, ETAG]
