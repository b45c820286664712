"""A package miss in a subdir whose repodata is big (conda-forge's linux-64: 280 MB of JSON)
takes its record from the package's shard, even once a classic client's fetch of
repodata.json has made the JSON on disk: reading one record out of that JSON means parsing all
of it (0.18 s, holding the GIL) for every miss. Without shards upstream, or for a file the
shards do not list, the snapshot's record lines answer (made once from the JSON, in the worker
process); where they cannot be made, the JSON itself."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from starlette.testclient import TestClient

from condaproxy.cache import checksums, derived
from condaproxy.cache.transfer import ClientAbort
from condaproxy.settings import ChannelSettings
from condaproxy.storage.keys import MetaKey
from condaproxy.web.app import create_app
from tests.cache.test_zst_only import filler
from tests.support.inproc import (
    Clock,
    make_settings,
    record,
    running,
    services_of,
    upstream_subdir,
)

UP = "https://up.example/cf"
FILES = {f"pkg{i}-1.0-0.conda": b"%d" % i * 500 for i in range(20)}
UNSHARDED = "late-1.0-0.conda"  # listed in the JSON, in no shard
IDENTITY = {"accept-encoding": "identity"}  # the JSON itself is made on disk


@pytest.fixture
def json_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The file names looked up by reading the whole JSON document; every document counts
    as big."""
    monkeypatch.setattr(checksums, "BIG", 64)
    seen: list[str] = []
    lookup = checksums.lookup_record

    def counted(path: str, filename: str) -> Any:
        seen.append(filename)
        return lookup(path, filename)

    monkeypatch.setattr(checksums, "lookup_record", counted)
    return seen


def client_of(tmp_path: Path) -> TestClient:
    settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)], repodata_ttl=600)
    return TestClient(create_app(settings, clock=Clock()))


@pytest.fixture
def sharded(json_reads) -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mocked:
        upstream_subdir(mocked, UP, "linux-64", FILES, sharded=True)
        yield mocked


def test_with_the_json_on_disk_a_big_subdir_misses_read_shards(tmp_path, sharded, json_reads):
    with client_of(tmp_path) as client:
        assert (
            client.get("/cf/linux-64/repodata.json", headers=IDENTITY).status_code == 200
        )  # a classic client
        for fn, data in FILES.items():
            got = client.get(f"/cf/linux-64/{fn}")
            assert got.status_code == 200 and got.content == data
            assert got.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert json_reads == [], "a miss parsed the whole JSON for one record"
    shards = [c for c in sharded.calls if "/shards/" in c.request.url.path]
    assert shards, "no shard was read"


def test_a_file_the_shards_do_not_list_is_found_in_the_json(tmp_path, json_reads) -> None:
    late = b"late" * 300
    with respx.mock(assert_all_called=False) as mocked:
        upstream_subdir(mocked, UP, "linux-64", FILES, sharded=True)
        # The JSON (newer than the shard index) lists one more file.
        records = {fn: record(fn, d) for fn, d in {**FILES, UNSHARDED: late}.items()}
        import zstandard

        from tests.support.inproc import repodata

        mocked.get(f"{UP}/linux-64/repodata.json.zst").respond(
            200, content=zstandard.compress(repodata("linux-64", records))
        )
        mocked.get(f"{UP}/linux-64/{UNSHARDED}").respond(200, content=late)
        with client_of(tmp_path) as client:
            assert client.get("/cf/linux-64/repodata.json", headers=IDENTITY).status_code == 200
            got = client.get(f"/cf/linux-64/{UNSHARDED}")
            assert got.status_code == 200 and got.content == late
            assert got.headers["etag"] == f'"{hashlib.sha256(late).hexdigest()}"', "listed"
    assert json_reads == [], "the snapshot's record lines answer, not a parse of the JSON"


def test_without_shards_upstream_the_json_answers(tmp_path, json_reads) -> None:
    with respx.mock(assert_all_called=False) as mocked:
        upstream_subdir(mocked, UP, "linux-64", FILES, sharded=False)
        with client_of(tmp_path) as client:
            assert client.get("/cf/linux-64/repodata.json", headers=IDENTITY).status_code == 200
            fn = "pkg3-1.0-0.conda"
            got = client.get(f"/cf/linux-64/{fn}")
            assert got.status_code == 200
            assert got.headers["etag"] == f'"{hashlib.sha256(FILES[fn]).hexdigest()}"'
    assert json_reads == [], "the snapshot's record lines answer, not a parse of the JSON"


def test_where_the_record_lines_cannot_be_made_the_json_answers(
    tmp_path, json_reads, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_room(source: str, tmp_dir: str) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(derived.MAKERS, "records", ("json", no_room))
    with respx.mock(assert_all_called=False) as mocked:
        upstream_subdir(mocked, UP, "linux-64", FILES, sharded=False)
        with client_of(tmp_path) as client:
            for fn in ("pkg3-1.0-0.conda", "pkg4-1.0-0.conda"):
                got = client.get(f"/cf/linux-64/{fn}")
                assert got.status_code == 200 and got.content == FILES[fn]
                assert got.headers["etag"] == f'"{hashlib.sha256(FILES[fn]).hexdigest()}"'
    assert json_reads == ["pkg3-1.0-0.conda", "pkg4-1.0-0.conda"]


# Without shards, a big snapshot's misses used to parse the whole JSON every time. The first
# miss now has the snapshot's record lines made (rules/record_lines, in the worker process;
# the misses that come meanwhile wait for the same build); every miss finds its record there
# by bisection, verified against it as before.


async def lines_made(app: Any) -> set[str]:
    for _ in range(600):
        entry = services_of(app).index.get_meta(MetaKey.repodata("cf/linux-64"))
        if entry is not None and "records" in entry.variants:
            return set(entry.variants)
        await asyncio.sleep(0.05)
    raise AssertionError("the record lines were never made")


async def test_after_the_first_miss_a_big_unsharded_subdir_reads_record_lines(
    tmp_path, json_reads
) -> None:
    tampered = "pkg7-1.0-0.conda"
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        routes = upstream_subdir(router, UP, "linux-64", FILES, extra=filler(60_000))
        settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)])
        app = create_app(settings, clock=Clock())
        async with running(app) as client:
            first = await client.get("/cf/linux-64/pkg0-1.0-0.conda")
            assert first.status_code == 200 and first.content == FILES["pkg0-1.0-0.conda"]
            assert {"zst", "json", "records"} <= await lines_made(app)
            routes[tampered].respond(200, content=b"X" * len(FILES[tampered]))
            for fn, data in FILES.items():
                if fn in ("pkg0-1.0-0.conda", tampered):
                    continue
                got = await client.get(f"/cf/linux-64/{fn}")
                assert got.status_code == 200 and got.content == data
                assert got.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"', "listed"
            try:  # the record in the lines is the one checked: other bytes never complete
                bad = await client.get(f"/cf/linux-64/{tampered}")
            except (httpx.HTTPError, ClientAbort):
                pass
            else:
                assert bad.content != b"X" * len(FILES[tampered]), "tampered bytes completed"
            router.get(f"{UP}/linux-64/absent-1.0-0.conda").respond(404)
            absent = await client.get("/cf/linux-64/absent-1.0-0.conda")
            assert absent.status_code == 404
    assert json_reads == [], "a miss parsed the whole JSON"


async def test_after_an_upstream_change_the_lines_are_ready_before_the_next_miss(
    tmp_path, json_reads
) -> None:
    """Record lines asked for once are made again for each new snapshot, as soon as its JSON
    is, so the first miss after a change does not wait for them."""
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        upstream_subdir(router, UP, "linux-64", FILES)
        clock = Clock()
        settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)], repodata_ttl=60)
        app = create_app(settings, clock=clock)
        async with running(app) as client:
            assert (await client.get("/cf/linux-64/pkg0-1.0-0.conda")).status_code == 200
            before = services_of(app).index.get_meta(MetaKey.repodata("cf/linux-64"))
            assert before is not None and "records" in before.variants
            later = {**FILES, "new-1.0-0.conda": b"new" * 100}
            upstream_subdir(router, UP, "linux-64", later)
            clock.now += 120  # past repodata_ttl: the next request revalidates
            changed = await client.get("/cf/linux-64/repodata.json.zst")
            assert changed.status_code == 200
            for _ in range(600):
                entry = services_of(app).index.get_meta(MetaKey.repodata("cf/linux-64"))
                assert entry is not None and entry.digest != before.digest
                if "records" in entry.variants:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("no record lines for the new snapshot without a miss")
            got = await client.get("/cf/linux-64/new-1.0-0.conda")
            assert got.status_code == 200 and got.content == b"new" * 100
    assert json_reads == []
