from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.replicas import start_replicas
from tests.support.redis_server import RedisServer
from tests.support.s3 import S3Server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.resume()  # a test that paused it must not leave it stopped
    server.stop()


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.kill()


@pytest.fixture
def replicas(upstream, start_proxy, tmp_path, s3_server, bucket):  # type: ignore[no-untyped-def]
    """start(n, poll_interval, redis_url=...): replicas sharing this test's bucket."""

    def start(n: int = 2, poll_interval: float = 0.5, redis_url: str = "") -> list:  # type: ignore[type-arg]
        return start_replicas(
            start_proxy, upstream.url, tmp_path, s3_server, bucket, n, poll_interval, redis_url
        )

    return start
