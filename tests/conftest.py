from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from condaproxy.cache import transports
from tests.support.channel import build_channel
from tests.support.processes import Proxy, Upstream, write_config


@pytest.fixture(autouse=True)
def in_process_upstreams_through_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process tests describe upstreams to respx, which mocks httpx: an app built here
    fetches through the httpx fetcher. Real `condaproxy serve` processes use production's
    (aiohttp); tests/cache/test_fetchers.py runs both against a real upstream."""
    monkeypatch.setattr(transports, "production_fetcher", transports.HttpxFetcher)


@pytest.fixture(scope="session")
def channel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real channel (linux-64 + noarch, .conda and .tar.bz2, shards and .zst)."""
    base = tmp_path_factory.mktemp("channel")
    return build_channel(base / "channel", base / "work")


@pytest.fixture
def upstream(channel_dir: Path) -> Iterator[Upstream]:
    server = Upstream(channel_dir).start()
    yield server
    server.stop()


ProxyFactory = Callable[..., Proxy]


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[ProxyFactory]:
    started: list[Proxy] = []

    def start(
        channels: dict[str, dict[str, object]],
        ttl: int = 60,
        workers: int = 1,
        env: dict[str, str] | None = None,
        cache: Path | None = None,
        extra: str = "",
        tokens: dict[str, dict[str, object]] | None = None,
    ) -> Proxy:
        config = write_config(
            tmp_path / f"proxy{len(started)}.toml",
            cache or tmp_path / "cache",
            channels,
            ttl,
            extra,
            tokens,
        )
        proxy = Proxy(config, workers=workers, env=env or {}).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
