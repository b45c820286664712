"""A worker's start-up warm-up (issue 14, cold package GET with several workers): a restart on a
cache holding a subdir's shard index has its decoded form ready before the first request,
without asking the upstream anything, and whatever the state of the upstream or of the
cached copy, start-up and /healthz are as before."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from condaproxy.settings import ChannelSettings
from condaproxy.storage.keys import MetaKey
from condaproxy.web.app import create_app
from tests.support.inproc import Clock, make_settings, services_of, until, upstream_subdir

UP = "https://up.example/cf"
FILES = {"pkg-1.0-0.conda": b"p" * 800, "other-2.0-0.conda": b"o" * 600}
KEY = MetaKey.shard_index("cf/linux-64")


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mocked:
        yield mocked


@pytest.fixture
def start(tmp_path: Path, names_for_every_index: None) -> Any:
    settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)], repodata_ttl=60)
    clock = Clock()

    def started() -> TestClient:
        return TestClient(create_app(settings, clock=clock))

    return started


def filled(start: Any, router: respx.MockRouter) -> Path:
    """A first run caches linux-64's shard index (and one package); the cached index's path."""
    upstream_subdir(router, UP, "linux-64", FILES, sharded=True)
    with start() as client:
        assert client.get("/cf/linux-64/pkg-1.0-0.conda").status_code == 200
        services = services_of(client.app)

        def names_made() -> bool:
            entry = services.index.get_meta(KEY)
            return entry is not None and "names" in entry.variants

        client.portal.call(until, names_made)  # the index's name map, made after the miss
        client.portal.call(services.downloads.aclose)
        entry = services.index.get_meta(KEY)
        assert entry is not None
        return services.meta.variant_path(KEY, entry.variants["body"])


def warmed(client: TestClient) -> list[MetaKey]:
    """What the worker's warm-up did, once it is over (nothing without a warm-up)."""
    task = getattr(services_of(client.app), "warming", None)
    if task is None:
        return []

    async def done() -> list[MetaKey]:
        result: list[MetaKey] = await task
        return result

    return client.portal.call(done)


def test_after_a_restart_the_first_package_request_finds_the_shard_index_ready(
    start, router, decodes
):
    filled(start, router)
    asked = router.calls.call_count
    decodes.clear()
    with start() as client:
        done = warmed(client)
        at_start = len(decodes)
        got = client.get("/cf/linux-64/other-2.0-0.conda")
        assert got.status_code == 200 and got.content == FILES["other-2.0-0.conda"]
        assert got.headers["etag"] == f'"{hashlib.sha256(FILES["other-2.0-0.conda"]).hexdigest()}"'
        assert len(decodes) == at_start, "the first request found the shard index ready"
        # Its sorted name map (rules/shard_names) was mapped at start-up: nothing decoded.
        assert done == [KEY] and at_start == 0
        # The shard is fetched for the package's record; nothing else was asked at start-up.
        assert router.calls.call_count == asked + 2


def test_a_dead_upstream_changes_nothing_at_start_up(start, router, decodes):
    filled(start, router)
    router.reset()
    router.route().mock(side_effect=httpx.ConnectError("unreachable"))
    with capture_logs() as logged, start() as client:
        assert client.get("/healthz").status_code == 200
        assert warmed(client) == [KEY]
        assert router.calls.call_count == 0
        assert not [e for e in logged if e["log_level"] in ("warning", "error", "critical")]
        hit = client.get("/cf/linux-64/pkg-1.0-0.conda")
        assert hit.status_code == 200 and hit.headers["x-cache"] == "HIT"


def test_a_damaged_cached_shard_index_leaves_start_up_alone(start, router):
    path = filled(start, router)
    path.write_bytes(b"\0" * path.stat().st_size)
    with start() as client:
        assert client.get("/healthz").status_code == 200
        warmed(client)  # whatever it made of the damaged copy, start-up went on
        hit = client.get("/cf/linux-64/pkg-1.0-0.conda")
        assert hit.status_code == 200 and hit.headers["x-cache"] == "HIT"
        # The request path notices the damage (at_rest.py) and fetches the index again.
        cold = client.get("/cf/linux-64/other-2.0-0.conda")
        assert cold.status_code == 200 and cold.content == FILES["other-2.0-0.conda"]
        sha = hashlib.sha256(FILES["other-2.0-0.conda"]).hexdigest()
        assert cold.headers["etag"] == f'"{sha}"', "checked against its record"
