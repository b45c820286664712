"""The bounded cache in-process: least recently used blobs go first, uploads, the shards made
from them and files being served are never evicted, another worker's pass is not doubled, and
below min_free the proxy serves without caching and says so. The background loop is stopped
where a test runs the passes itself; use is recorded through the evictor's own API."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import respx
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from condaproxy.cache.eviction import Evictor
from condaproxy.cache.instruments import Metrics
from condaproxy.settings import ChannelSettings, ServerSettings
from condaproxy.storage.blobs import BlobStore
from condaproxy.storage.index import Index
from condaproxy.storage.locks import KeyedLocks, release
from condaproxy.web.app import create_app
from condaproxy.web.services import Services
from tests.support.channel import Pkg
from tests.support.inproc import (
    Clock,
    built,
    decode_index,
    make_settings,
    sample,
    services_of,
    token,
    until,
    upstream_subdir,
)

UP = "https://up.example/cf"
WRITE = "writer-token-0001"
FILES = {f"{name}-1.0-0.conda": name.encode() * 1000 for name in ("a", "b", "c")}
SHA = {fn: hashlib.sha256(data).hexdigest() for fn, data in FILES.items()}

Start = Callable[..., contextlib.AbstractContextManager[TestClient]]


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mocked:
        upstream_subdir(mocked, UP, "linux-64", FILES)
        yield mocked


@pytest.fixture
def start(tmp_path: Path, router) -> Start:
    @contextlib.contextmanager
    def run(workers: int = 1, **cache: Any) -> Iterator[TestClient]:
        settings = make_settings(
            tmp_path / "cache",
            [ChannelSettings("cf", UP), ChannelSettings("local")],
            [token("ci", WRITE, local="write")],
            **cache,
        )
        settings = msgspec.structs.replace(settings, server=ServerSettings(workers=workers))
        with TestClient(create_app(settings, clock=Clock())) as client:
            yield client

    return run


def stopped(client: TestClient) -> Services:
    """The services, with the evictor's background loop stopped: the test runs each pass."""
    services = services_of(client.app)
    client.portal.call(services.evictor.stop)
    return services


def fetch_all(client: TestClient, services: Services) -> None:
    for fn, data in FILES.items():
        assert client.get(f"/cf/linux-64/{fn}").content == data
    client.portal.call(services.downloads.aclose)  # every commit done


def age(services: Services, sha: str, when: float) -> None:
    os.utime(services.store.location(sha), (when, when))


def cached(client: TestClient) -> dict[str, bool]:
    return {fn: client.head(f"/cf/linux-64/{fn}").headers["x-cache"] == "HIT" for fn in FILES}


def test_the_least_recently_used_blob_goes_first(start):
    with start(max_size=2500) as client:
        services = stopped(client)
        fetch_all(client, services)
        for when, fn in enumerate(FILES, start=1000):  # a used longest ago, then b, then c
            age(services, SHA[fn], when)
        assert client.get("/cf/linux-64/a-1.0-0.conda").headers["x-cache"] == "HIT"  # a touch
        result = client.portal.call(services.evictor.run_once)
        assert result == {"evicted": 1, "bytes": 1000}
        assert cached(client) == {"a-1.0-0.conda": True, "b-1.0-0.conda": False,
                                  "c-1.0-0.conda": True}  # fmt: skip
        text = client.get("/metrics").text
        assert sample(text, "condaproxy_evictions_total") == 1
        assert sample(text, "condaproxy_evicted_bytes_total") == 1000
        assert sample(text, "condaproxy_store_bytes") == 2000
        assert sample(text, "condaproxy_store_max_bytes") == 2500
        again = client.get("/cf/linux-64/b-1.0-0.conda")  # an evicted file comes back whole
        assert again.content == FILES["b-1.0-0.conda"] and again.headers["x-cache"] == "MISS"


def test_a_touch_through_the_evictor_is_applied_to_the_blob(start):
    with start() as client:
        services = stopped(client)
        fetch_all(client, services)
        sha = SHA["a-1.0-0.conda"]
        age(services, sha, 1000)
        services.evictor.touch(sha)
        assert client.portal.call(services.evictor.run_once) == {"evicted": 0, "bytes": 0}
        assert os.stat(services.store.location(sha)).st_atime > 1000


def test_uploads_and_the_shards_made_from_them_are_never_evicted(start, tmp_path):
    tool = Pkg("mytool", "1.0", "h0", "linux-64")
    data = built(tmp_path / "pkg", tool)[tool.filename]
    with start(max_size=1) as client:
        services = stopped(client)
        upload = client.post(f"/api/channels/local/upload/{tool.filename}", content=data,
                             headers={"x-api-key": WRITE})  # fmt: skip
        assert upload.status_code == 201
        index = decode_index(client.get("/local/linux-64/repodata_shards.msgpack.zst").content)
        shard = index["shards"]["mytool"].hex()
        fetch_all(client, services)
        for sha, _ in services.store.iterate():
            age(services, sha, 1)  # everything is old
        result = client.portal.call(services.evictor.run_once)
        assert result["evicted"] == 3
        assert cached(client) == dict.fromkeys(FILES, False)
        assert client.get(f"/local/linux-64/shards/{shard}.msgpack.zst").status_code == 200
        assert client.get(f"/local/linux-64/{tool.filename}").content == data


def test_a_blob_being_served_survives_until_it_is_closed(start):
    with start(max_size=1) as client:
        services = stopped(client)
        fetch_all(client, services)
        sha = SHA["b-1.0-0.conda"]
        services.evictor.begin_serving(sha)
        services.evictor.begin_serving(sha)  # two clients
        client.portal.call(services.evictor.run_once)
        assert cached(client) == {"a-1.0-0.conda": False, "b-1.0-0.conda": True,
                                  "c-1.0-0.conda": False}  # fmt: skip
        services.evictor.end_serving(sha)
        client.portal.call(services.evictor.run_once)
        assert cached(client)["b-1.0-0.conda"], "one client is still reading it"
        services.evictor.end_serving(sha)
        client.portal.call(services.evictor.run_once)
        assert not cached(client)["b-1.0-0.conda"]


def test_one_worker_evicts_at_a_time(start):
    with start(workers=2, max_size=1) as client:
        services = stopped(client)
        fetch_all(client, services)
        other_worker = services.locks.try_acquire("evictor")
        assert other_worker is not None
        try:
            assert client.portal.call(services.evictor.run_once) == {"evicted": 0, "bytes": 0}
        finally:
            release(other_worker)
        assert client.portal.call(services.evictor.run_once)["evicted"] == 3


def test_an_unbounded_cache_evicts_nothing(start):
    with start(max_size=0) as client:
        services = stopped(client)
        fetch_all(client, services)
        assert client.portal.call(services.evictor.run_once) == {"evicted": 0, "bytes": 0}
        assert all(cached(client).values())


def test_a_commit_past_max_size_wakes_the_background_pass(start):
    with start(max_size=2500) as client:
        services = services_of(client.app)
        fetch_all(client, services)

        def total() -> int:
            return sum(size for _, size in services.store.iterate())

        async def settled() -> None:
            await until(lambda: total() <= 2500)

        client.portal.call(settled)
        assert sum(cached(client).values()) == 2


def test_below_min_free_files_are_served_whole_but_not_kept_and_readiness_says_so(start, router):
    with capture_logs() as events, start(min_free=2**62) as client:
        for _ in range(2):
            got = client.get("/cf/linux-64/a-1.0-0.conda")
            assert got.content == FILES["a-1.0-0.conda"] and got.headers["x-cache"] == "MISS"
        assert router.get(f"{UP}/linux-64/a-1.0-0.conda").call_count == 2
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["caching"] is False
        assert ready.json()["caching_off_because"] == "below min_free"
        text = client.get("/metrics").text
        assert sample(text, "condaproxy_not_cached_total", reason="low_disk") == 2
        services = services_of(client.app)
        services.evictor.min_free = 0  # space was freed
        client.portal.call(services.evictor.run_once)
        assert services.evictor.caching is True
    said = [(e["event"], e["log_level"]) for e in events]
    assert ("low disk: proxying without caching", "warning") in said
    assert ("not cached: low disk", "warning") in said
    assert ("caching resumed", "warning") in said


def test_a_store_whose_disk_cannot_be_asked_has_no_room(tmp_path):
    store = BlobStore(tmp_path / "blobs", tmp_path / "tmp")
    evictor = Evictor(
        Index(tmp_path / "index"), store, KeyedLocks(tmp_path / "locks"), Metrics(), 0, 0
    )
    assert evictor.has_room(10)
    (tmp_path / "tmp").rmdir()
    assert not evictor.has_room(10)
