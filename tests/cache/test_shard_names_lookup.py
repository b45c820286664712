"""A package's record is found through its shard without decoding the shard index: the index is
stored with its sorted name map (rules/shard_names), which every worker searches where it lies.
A stored index or map that no longer reads as stored (changed on disk while the proxy runs) is
dropped: the record then comes from the repodata, never a 500, and the next request for the
index fetches it again."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import respx
from starlette.testclient import TestClient

from condaproxy.settings import ChannelSettings
from condaproxy.storage.keys import MetaKey
from condaproxy.web.app import create_app
from tests.support.inproc import Clock, make_settings, services_of, until, upstream_subdir

UP = "https://up.example/cf"
FILES = {f"pkg{i}-1.0-0.conda": b"%d" % i * 500 for i in range(40)}
KEY = MetaKey.shard_index("cf/linux-64")


def sha(fn: str) -> str:
    return hashlib.sha256(FILES[fn]).hexdigest()


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mocked:
        upstream_subdir(mocked, UP, "linux-64", FILES, sharded=True)
        yield mocked


@pytest.fixture
def client(tmp_path: Path, router, names_for_every_index) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)], repodata_ttl=600)
    with TestClient(create_app(settings, clock=Clock())) as c:
        yield c


def whole_repodata(router: respx.MockRouter) -> int:
    return sum(1 for c in router.calls if c.request.url.path.endswith("/repodata.json.zst"))


def names_made(client: TestClient) -> bool:
    entry = services_of(client.app).index.get_meta(KEY)
    return entry is not None and "names" in entry.variants


def test_records_come_from_shards_without_decoding_the_index(client, router, decodes) -> None:
    """The first miss uses the map the index's build checked (no second decode) and has the
    index's name map made in the background; every later lookup, in any worker, searches it."""
    first = "pkg0-1.0-0.conda"
    assert client.get(f"/cf/linux-64/{first}").content == FILES[first]
    assert decodes == [], "the build's own map was handed over"
    client.portal.call(until, lambda: names_made(client))
    services_of(client.app).packages.checksums._shard_maps.clear()  # as another worker
    for fn in FILES:
        got = client.get(f"/cf/linux-64/{fn}")
        assert got.status_code == 200 and got.content == FILES[fn]
        assert got.headers["etag"] == f'"{sha(fn)}"', "checked against its record"
    assert decodes == [], "no decode once the map is made"
    assert whole_repodata(router) == 0


@pytest.mark.parametrize("variant", ["names", "body"])
def test_a_stored_index_changed_while_running_is_dropped_not_a_500(
    client, router, variant: str
) -> None:
    first = "pkg0-1.0-0.conda"
    assert client.get(f"/cf/linux-64/{first}").status_code == 200
    client.portal.call(until, lambda: names_made(client))
    services = services_of(client.app)
    entry = services.index.get_meta(KEY)
    assert entry is not None and {"body", "names"} <= set(entry.variants)
    if variant == "body":  # an index stored before the map existed: decoded on use
        services.index.put_meta(KEY, replace(entry, variants={"body": entry.variants["body"]}))
    path = services.meta.variant_path(KEY, entry.variants[variant])
    path.write_bytes(b"\x00" * path.stat().st_size)
    services.packages.checksums._mapped.clear()  # as if no worker had it mapped yet
    got = client.get("/cf/linux-64/pkg1-1.0-0.conda")
    assert got.status_code == 200, got.text
    assert got.headers["etag"] == f'"{sha("pkg1-1.0-0.conda")}"', "checked against its record"
    assert services.index.get_meta(KEY) is None or services.index.get_meta(KEY) != entry


def test_a_small_index_gets_no_name_map_and_starts_no_worker_process(
    tmp_path: Path, router, decodes
) -> None:
    """Decoding a small channel's index costs less than starting the worker process to map it
    would, in the middle of an install."""
    settings = make_settings(tmp_path / "small", [ChannelSettings("cf", UP)], repodata_ttl=600)
    with TestClient(create_app(settings, clock=Clock())) as client:
        for fn in list(FILES)[:5]:
            assert client.get(f"/cf/linux-64/{fn}").content == FILES[fn]
        services = services_of(client.app)
        client.portal.call(services.downloads.aclose)
        assert not names_made(client)
        assert services.workers._pool is None, "no worker process was started"


def test_a_mapped_name_map_cut_short_on_disk_is_never_read(client, router) -> None:
    """The name map stays mapped between lookups. Cut short in place on disk (`truncate`),
    its file is found changed (at rest) and fetched again under the same name; reading the old
    mapping past the file's new end would kill the process with SIGBUS, so a mapping is used
    only while its file is the one at the path."""
    assert client.get("/cf/linux-64/pkg0-1.0-0.conda").status_code == 200
    client.portal.call(until, lambda: names_made(client))
    services = services_of(client.app)
    assert client.get("/cf/linux-64/pkg1-1.0-0.conda").status_code == 200  # maps it
    entry = services.index.get_meta(KEY)
    assert entry is not None
    names = entry.variants["names"]
    assert names.sha256 in services.packages.checksums._mapped, "the map is kept mapped"
    path = services.meta.variant_path(KEY, names)
    path.write_bytes(b"")  # cut short in place: the same inode, no bytes
    for fn in ("pkg2-1.0-0.conda", "pkg3-1.0-0.conda"):
        got = client.get(f"/cf/linux-64/{fn}")
        assert got.status_code == 200 and got.headers["etag"] == f'"{sha(fn)}"'
    client.portal.call(until, lambda: names_made(client))  # made again: the same name
    again = services.index.get_meta(KEY)
    assert again is not None and again.variants["names"].sha256 == names.sha256
    for fn in ("pkg4-1.0-0.conda", "pkg5-1.0-0.conda"):
        got = client.get(f"/cf/linux-64/{fn}")
        assert got.status_code == 200 and got.headers["etag"] == f'"{sha(fn)}"'
