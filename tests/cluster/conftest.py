from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.replicas import start_replicas
from tests.support.channel import Pkg, build_package, index_channel
from tests.support.processes import Upstream
from tests.support.redis_server import RedisServer
from tests.support.s3 import S3Server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is in the `cluster` group (`pytest -m cluster`)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.cluster)


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


@pytest.fixture
def started() -> Iterator[list]:  # type: ignore[type-arg]
    """Proxies a test starts by hand: stopped at teardown."""
    proxies: list = []  # type: ignore[type-arg]
    yield proxies
    for proxy in proxies:
        proxy.stop()


BIG = Pkg("bigtool", "1.0", "h0", "linux-64", payload_size=8 << 20)
BIG_PATH = f"/linux-64/{BIG.filename}"


@pytest.fixture
def big_upstream(channel_dir: Path, tmp_path: Path) -> Iterator[Upstream]:
    """The test channel plus an 8 MiB package: in slow mode, 0.2 s per MiB."""
    directory = tmp_path / "big-channel"
    shutil.copytree(channel_dir, directory)
    build_package(BIG, tmp_path / "work", directory)
    index_channel(directory)
    server = Upstream(directory).start()
    yield server
    server.stop()
