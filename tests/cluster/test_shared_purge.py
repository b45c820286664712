"""A purge through one replica empties every replica's cache of that scope (and the bucket's
copy), at once with Redis and within the poll bound without; none is lost when two replicas
purge at the same time."""

from __future__ import annotations

import concurrent.futures
import hashlib
from pathlib import Path

import httpx
import pytest

from tests.cluster.replicas import WRITE, wait_for
from tests.support.redis_server import RedisServer
from tests.support.s3 import S3Server

pytestmark = pytest.mark.integration

PKG = "/linux-64/datatool-1.0-h2.conda"
OTHER = "/linux-64/libzlib-1.3-h0.conda"


def outcome(proxy_url: str, path: str) -> str:
    got = httpx.get(f"{proxy_url}/local{path}", timeout=30)
    assert got.status_code == 200
    return got.headers["x-cache"]


def files(proxy_url: str) -> int:
    stats = httpx.get(f"{proxy_url}/api/cache/stats", headers={"x-api-key": WRITE}, timeout=30)
    return int(stats.json()["channels"]["local"]["files"])


def purge(proxy_url: str, path: str) -> httpx.Response:
    return httpx.delete(
        f"{proxy_url}/api/cache/local{path}", headers={"x-api-key": WRITE}, timeout=30
    )


@pytest.mark.parametrize("with_redis", [True, False], ids=["redis", "no-redis"])
def test_a_purge_on_one_replica_empties_every_replica_and_the_bucket(
    replicas,
    s3_server: S3Server,
    bucket: str,
    redis_server: RedisServer,
    channel_dir: Path,
    with_redis: bool,
) -> None:
    proxies = replicas(3, 0.5 if not with_redis else 30, redis_server.url if with_redis else "")
    for proxy in proxies:
        for path in (PKG, OTHER):
            outcome(proxy.url, path)
        assert outcome(proxy.url, PKG) == "HIT"
    held = [files(p.url) for p in proxies]
    sha = hashlib.sha256((channel_dir / PKG.lstrip("/")).read_bytes()).hexdigest()
    key = f"prod/cas/sha256/{sha[:2]}/{sha}"
    assert wait_for(lambda: key in s3_server.keys(bucket))
    done = purge(proxies[0].url, PKG)
    assert done.status_code == 200, done.text
    assert done.json()["removed"]["files"] == 1
    assert wait_for(lambda: key not in s3_server.keys(bucket)), "the bucket's copy stayed"
    for proxy, before in zip(proxies[1:], held[1:], strict=True):
        assert wait_for(lambda p=proxy, n=before: files(p.url) == n - 1, 5), (
            "another replica still holds the purged file"
        )
        assert outcome(proxy.url, PKG) == "MISS"
        assert outcome(proxy.url, OTHER) == "HIT", "a purge of one file dropped others"


def test_two_replicas_purging_at_once_lose_neither_purge(
    replicas, s3_server: S3Server, bucket: str
) -> None:
    a, b, c = replicas(3, 0.5)
    for path in (PKG, OTHER):
        outcome(c.url, path)
    before = files(c.url)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda job: purge(*job), [(a.url, PKG), (b.url, OTHER)]))
    assert [r.status_code for r in done] == [200, 200]
    assert wait_for(lambda: files(c.url) == before - 2, 5)


def test_a_purge_while_the_store_is_down_is_refused_and_purges_nothing(
    replicas, s3_server: S3Server
) -> None:
    (a,) = replicas(1, 0.5)
    outcome(a.url, PKG)
    s3_server.pause()
    try:
        refused = purge(a.url, PKG)
    finally:
        s3_server.resume()
    assert refused.status_code == 503 and refused.json()["status"] == 503
    assert outcome(a.url, PKG) == "HIT"
