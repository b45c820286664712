"""A package miss in a subdir whose repodata is big (conda-forge's linux-64: 280 MB of JSON)
takes its record from the package's shard, even once a classic client's fetch of
repodata.json has made the JSON on disk: reading one record out of that JSON means parsing all
of it (0.18 s, holding the GIL) for every miss. Without shards upstream, or for a file the
shards do not list, the JSON on disk still answers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import respx
from starlette.testclient import TestClient

from condaproxy.cache import checksums
from condaproxy.settings import ChannelSettings
from condaproxy.web.app import create_app
from tests.support.inproc import Clock, make_settings, record, upstream_subdir

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
    assert json_reads == [UNSHARDED]


def test_without_shards_upstream_the_json_answers(tmp_path, json_reads) -> None:
    with respx.mock(assert_all_called=False) as mocked:
        upstream_subdir(mocked, UP, "linux-64", FILES, sharded=False)
        with client_of(tmp_path) as client:
            assert client.get("/cf/linux-64/repodata.json", headers=IDENTITY).status_code == 200
            fn = "pkg3-1.0-0.conda"
            got = client.get(f"/cf/linux-64/{fn}")
            assert got.status_code == 200
            assert got.headers["etag"] == f'"{hashlib.sha256(FILES[fn]).hexdigest()}"'
    assert json_reads == ["pkg3-1.0-0.conda"]
