"""A purge removes every file fetched before it, also one whose commit was still waiting
(write-behind, commits.py) or being written when the purge came: such a commit is dropped, in
this worker and in any other (the index counts purges), and the next request goes upstream."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx
from starlette.testclient import TestClient

from condaproxy.cache.commits import WriteBehind
from condaproxy.cache.workers import Workers
from condaproxy.settings import ChannelSettings
from condaproxy.storage.blobs import BlobStore
from condaproxy.storage.index import FileEntry, Index
from condaproxy.web.app import create_app
from tests.support.inproc import Clock, make_settings, services_of, token, upstream_subdir

UP = "https://up.example/cf"
ADMIN = "admin-token-0001"
SMALL = "linux-64/alpha-1.0-0.conda"
BIG = "linux-64/big-1.0-0.conda"  # over 1 MiB: kept through a temp file, not in memory
FILES = {SMALL: b"a" * 1000, BIG: bytes(range(256)) * (6 << 12)}


def entry_of(data: bytes) -> FileEntry:
    return FileEntry(hashlib.sha256(data).hexdigest(), len(data), 0.0)


# the write-behind itself


async def test_a_commit_queued_before_a_purge_is_dropped(tmp_path: Path) -> None:
    busy = [True]
    store = BlobStore(tmp_path / "blobs", tmp_path / "tmp")
    index = Index(tmp_path / "index")
    workers = Workers()
    wb = WriteBehind(store, index, workers, lambda: busy[0], False, 1 << 20, 30.0)
    before, after = b"fetched before the purge", b"fetched after the purge"
    first = asyncio.create_task(
        wb.commit("c/linux-64/a-1-0.conda", bytearray(before), entry_of(before))
    )
    await asyncio.sleep(0.05)
    # Another worker's purge: only the index's count tells this one.
    Index(tmp_path / "index").count_purge()
    second = asyncio.create_task(
        wb.commit("c/linux-64/b-1-0.conda", bytearray(after), entry_of(after))
    )
    await asyncio.sleep(0.05)
    busy[0] = False
    assert await asyncio.wait_for(first, 5) is False
    assert await asyncio.wait_for(second, 5) is True
    assert index.get_file("c/linux-64/a-1-0.conda") is None
    assert not store.exists(entry_of(before).sha256)
    assert index.get_file("c/linux-64/b-1-0.conda") == entry_of(after)
    workers.close()


async def test_a_purge_while_the_batch_writes_its_blobs_drops_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(tmp_path / "blobs", tmp_path / "tmp")
    index = Index(tmp_path / "index")
    workers = Workers()
    wb = WriteBehind(store, index, workers, lambda: False, False, 1 << 20, 30.0)
    put_bytes = BlobStore.put_bytes

    def purged_meanwhile(self, data, sha256):  # type: ignore[no-untyped-def]
        put_bytes(self, data, sha256)
        Index(tmp_path / "index").count_purge()

    monkeypatch.setattr(BlobStore, "put_bytes", purged_meanwhile)
    data = b"written while the purge ran"
    assert await wb.commit("c/noarch/x-1-0.conda", bytearray(data), entry_of(data)) is False
    assert index.get_file("c/noarch/x-1-0.conda") is None
    assert not store.exists(entry_of(data).sha256)
    workers.close()


# through the API, for every scope a purge can name


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mocked:
        upstream_subdir(mocked, UP, "linux-64", {fn.split("/")[1]: d for fn, d in FILES.items()})
        yield mocked


@pytest.fixture
def client(tmp_path: Path, router) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path / "cache", [ChannelSettings("cf", UP)], [token("ops", ADMIN, star="admin")]
    )
    with TestClient(create_app(settings, clock=Clock())) as c:
        yield c
        services_of(c.app).downloads.write_behind.busy = lambda: False  # see hold_commits


def hold_commits(client: TestClient) -> None:
    """As if downloads kept arriving: nothing is committed for 30 s unless hurried."""
    wb = services_of(client.app).downloads.write_behind
    wb.busy = lambda: True
    wb.max_delay = 30.0


def upstream_gets(router: respx.MockRouter, path: str) -> int:
    return sum(1 for call in router.calls if call.request.url.path == f"/cf/{path}")


@pytest.mark.parametrize(
    "scope",
    [
        "/api/cache",
        "/api/cache/cf",
        "/api/cache/cf/linux-64",
        f"/api/cache/cf/{SMALL}",
        "/api/cache?package=alpha",
        "/api/cache/cf?package=ALPHA",
    ],
)
def test_a_small_file_waiting_for_its_commit_is_purged(client, router, scope) -> None:
    hold_commits(client)
    assert client.get(f"/cf/{SMALL}").content == FILES[SMALL]
    assert upstream_gets(router, SMALL) == 1
    purged = client.delete(scope, headers={"x-api-key": ADMIN})
    assert purged.status_code == 200, purged.text
    again = client.get(f"/cf/{SMALL}")
    assert again.content == FILES[SMALL]
    assert again.headers["x-cache"] == "MISS"
    assert upstream_gets(router, SMALL) == 2
    stats = client.get("/api/cache/stats", headers={"x-api-key": ADMIN}).json()
    assert stats["channels"]["cf"]["files"] <= 1  # at most the copy fetched after the purge


def test_a_big_file_committed_while_a_purge_runs_is_dropped(
    client, router, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = services_of(client.app)
    commit = BlobStore.commit

    def purged_meanwhile(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        # The purge arrives while the verified blob is being made durable (this runs in a
        # thread: the server answers the purge meanwhile).
        purged = client.delete("/api/cache/cf", headers={"x-api-key": ADMIN})
        assert purged.status_code == 200, purged.text
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(BlobStore, "commit", purged_meanwhile)
    assert client.get(f"/cf/{BIG}").content == FILES[BIG]
    client.portal.call(services.downloads.aclose)
    monkeypatch.setattr(BlobStore, "commit", commit)
    assert services.index.get_file(f"cf/{BIG}") is None
    assert not services.store.exists(hashlib.sha256(FILES[BIG]).hexdigest())
    again = client.get(f"/cf/{BIG}")
    assert again.content == FILES[BIG] and again.headers["x-cache"] == "MISS"
    assert upstream_gets(router, BIG) == 2


def test_stats_count_a_file_the_moment_its_client_has_it(client) -> None:
    hold_commits(client)
    assert client.get(f"/cf/{SMALL}").content == FILES[SMALL]
    stats = client.get("/api/cache/stats", headers={"x-api-key": ADMIN}).json()
    assert stats["channels"]["cf"]["files"] == 1
    assert stats["channels"]["cf"]["bytes"] == len(FILES[SMALL])
