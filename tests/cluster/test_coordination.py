"""With Redis, replicas fetch a cold file once per cluster and see uploads at once; without
it (or with it killed) they degrade to once per replica and the poll bound, still correct."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.cluster.replicas import WRITE, wait_for
from tests.support.channel import Pkg, build_package
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

PKG = "/linux-64/datatool-1.0-h2.conda"


async def cold_gets(urls: list[str], each: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)) as client:
        return await asyncio.gather(*(client.get(u) for u in urls for _ in range(each)))


def warm_metadata(proxies: list) -> None:  # type: ignore[type-arg]
    for proxy in proxies:  # repodata per replica (phase A): only the package is compared
        assert httpx.get(f"{proxy.url}/local/linux-64/repodata.json", timeout=30).is_success


@pytest.mark.parametrize("with_redis", [True, False], ids=["redis", "no-redis"])
def test_a_cold_file_is_fetched_once_per_cluster_with_redis_and_once_per_replica_without(
    upstream, replicas, redis_server: RedisServer, channel_dir: Path, with_redis: bool
) -> None:
    proxies = replicas(3, 0.5, redis_server.url if with_redis else "")
    warm_metadata(proxies)
    upstream.mode("slow")  # the owner's fetch takes a while: the others arrive meanwhile
    responses = asyncio.run(cold_gets([f"{p.url}/local{PKG}" for p in proxies], 20))
    expected = (channel_dir / PKG.lstrip("/")).read_bytes()
    assert [r.status_code for r in responses] == [200] * 60
    assert all(r.content == expected for r in responses)
    fetched = upstream.count("GET", PKG)
    print(
        f"upstream GETs for one cold file, 3 replicas x 20 clients, redis={with_redis}: {fetched}"
    )
    assert fetched == 1 if with_redis else 1 <= fetched <= 3
    for proxy in proxies:
        body = httpx.get(f"{proxy.url}/readyz", timeout=30).json()
        assert body["coordination"] == ("ok" if with_redis else "polling")


@pytest.fixture(scope="module")
def tool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("coordination")
    return build_package(Pkg("internal-tool", "1.0", "h0", "linux-64"), base / "w", base / "o")


def post(proxy_url: str, path: Path) -> httpx.Response:
    return httpx.post(
        f"{proxy_url}/api/channels/internal/upload/{path.name}",
        content=path.read_bytes(),
        headers={"x-api-key": WRITE},
        timeout=30,
    )


def listed(proxy_url: str) -> set[str]:
    got = httpx.get(f"{proxy_url}/internal/linux-64/repodata.json", timeout=30)
    return set(got.json().get("packages.conda", {})) if got.status_code == 200 else set()


def test_with_redis_an_upload_is_visible_on_other_replicas_long_before_the_poll(
    replicas, redis_server: RedisServer, tool: Path
) -> None:
    a, b = replicas(2, 30, redis_server.url)
    time.sleep(0.5)  # the listeners have subscribed
    assert post(a.url, tool).status_code == 201
    started = time.monotonic()
    assert wait_for(lambda: tool.name in listed(b.url), 10)
    seen = time.monotonic() - started
    print(f"upload visible on another replica with redis: {seen:.3f}s (poll_interval 30 s)")
    assert seen <= 1.0


def test_redis_killed_mid_test_degrades_to_polling_and_nothing_fails(
    upstream, replicas, redis_server: RedisServer, channel_dir: Path, tool: Path
) -> None:
    a, b = replicas(2, 0.5, redis_server.url)
    warm_metadata([a, b])
    redis_server.kill()
    responses = asyncio.run(cold_gets([f"{a.url}/local{PKG}", f"{b.url}/local{PKG}"], 5))
    expected = (channel_dir / PKG.lstrip("/")).read_bytes()
    assert all(r.status_code == 200 and r.content == expected for r in responses)
    assert upstream.count("GET", PKG) <= 2, "at most once per replica"
    assert post(a.url, tool).status_code == 201
    assert wait_for(lambda: tool.name in listed(b.url), 0.5 + 5)
    ready = httpx.get(f"{a.url}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json()["coordination"] == "degraded"
    assert "redis unavailable" in ready.json()["coordination_error"]
