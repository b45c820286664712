"""A package's checksum comes from its shard when the channel offers only shards (or its
snapshot is big). When that shard's download fails midway (the upstream drops the connection,
or sends fewer bytes than it said), the package request is an upstream failure: a 502 whose
JSON names the upstream, never a 500, and the next request, once the upstream is good, works.

Real processes: a copy of the test channel without repodata.json (shards only)."""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import pytest
import zstandard

from tests.support.hostile import no_crash_in_log
from tests.support.processes import Upstream

pytestmark = pytest.mark.integration

PACKAGE = "linux-64/datatool-1.0-h2.conda"


@pytest.fixture
def shards_only(tmp_path: Path, channel_dir: Path) -> Iterator[Upstream]:
    directory = tmp_path / "shards-only"
    shutil.copytree(channel_dir, directory)
    for subdir in ("linux-64", "noarch"):
        for name in ("repodata.json", "repodata.json.zst", "repodata.json.bz2"):
            (directory / subdir / name).unlink(missing_ok=True)
    server = Upstream(directory).start()
    yield server
    server.stop()


def shard_path(channel_dir: Path, subdir: str, name: str) -> str:
    raw = (channel_dir / subdir / "repodata_shards.msgpack.zst").read_bytes()
    index = msgpack.unpackb(zstandard.ZstdDecompressor().decompressobj().decompress(raw))
    return f"/{subdir}/shards/{index['shards'][name].hex()}.msgpack.zst"


@pytest.mark.parametrize("how", ["connection dropped", "shorter than its Content-Length"])
def test_a_shard_cut_midway_makes_the_package_a_502_naming_the_upstream(
    start_proxy, shards_only: Upstream, channel_dir: Path, how: str
) -> None:  # type: ignore[no-untyped-def]
    with_password = shards_only.url.replace("http://", "http://reader:s3cret-pw@")
    proxy = start_proxy({"ch": {"upstream": with_password}})
    path = shard_path(channel_dir, "linux-64", "datatool")
    shard = (channel_dir / path.lstrip("/")).read_bytes()
    if how == "connection dropped":
        shards_only.override(path, shard, break_after=len(shard) // 2)
    else:
        shards_only.override(
            path, shard[: len(shard) // 2], headers={"content-length": str(len(shard))}
        )
    got = httpx.get(f"{proxy.url}/ch/{PACKAGE}", timeout=30)
    assert got.status_code == 502, (got.status_code, got.text)
    assert got.headers["content-type"].startswith("application/json")
    assert "upstream" in got.json()["error"]
    assert "s3cret-pw" not in got.text, "the upstream's credentials stay out of error bodies"
    shards_only.reset()
    again = httpx.get(f"{proxy.url}/ch/{PACKAGE}", timeout=30)
    assert again.status_code == 200
    expected = (channel_dir / PACKAGE).read_bytes()
    assert hashlib.sha256(again.content).digest() == hashlib.sha256(expected).digest()
    assert proxy.log_path is not None
    log = proxy.log_path.read_text()
    no_crash_in_log(log)
    assert "s3cret-pw" not in log


ADMIN = "admin-token-0123456789abcdef"


def test_a_package_cut_midway_is_one_failure_of_a_prefetch_not_the_whole_job(
    start_proxy, shards_only: Upstream, channel_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    proxy = start_proxy(
        {"ch": {"upstream": shards_only.url}},
        tokens={"ops": {"token": ADMIN, "roles": {"*": "admin"}}},
    )
    cut = "linux-64/datatool-1.0-h2.conda"
    whole = "linux-64/libcore-2.1-h1.tar.bz2"
    data = (channel_dir / cut).read_bytes()
    shards_only.override(f"/{cut}", data, break_after=len(data) // 2)
    headers = {"authorization": f"Bearer {ADMIN}"}
    job = httpx.post(
        f"{proxy.url}/api/cache/ch/linux-64/prefetch",
        json={"packages": [cut.split("/")[1], whole.split("/")[1]]},
        headers=headers,
    )
    assert job.status_code in (200, 201, 202), job.text
    job_id = job.json()["id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        stats = httpx.get(f"{proxy.url}/api/cache/stats", headers=headers).json()
        done = next(j for j in stats["prefetch"] if j["id"] == job_id)
        if done["state"] in ("done", "failed"):
            break
        time.sleep(0.2)
    assert done["fetched"] == 1, done
    assert [f["file"] for f in done["failures"]] == [cut], done
    assert "upstream" in done["failures"][0]["error"]
    assert not done.get("error"), "one file's failure is not the job's"


def test_a_shard_cut_midway_makes_the_package_page_a_502_not_a_500(
    start_proxy, shards_only: Upstream, channel_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    proxy = start_proxy({"ch": {"upstream": shards_only.url}})
    path = shard_path(channel_dir, "linux-64", "datatool")
    shard = (channel_dir / path.lstrip("/")).read_bytes()
    shards_only.override(path, shard, break_after=len(shard) // 2)
    page = httpx.get(f"{proxy.url}/ch/linux-64/?name=datatool", timeout=30)
    assert page.status_code == 502, (page.status_code, page.text[:300])
    shards_only.reset()
    page = httpx.get(f"{proxy.url}/ch/linux-64/?name=datatool", timeout=30)
    assert page.status_code == 200 and "datatool-1.0-h2.conda" in page.text


def test_a_damaged_cached_shard_is_dropped_and_fetched_again(
    start_proxy, shards_only: Upstream, channel_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The shard a package's checksum comes from is read from the cache like any blob: a
    damaged copy (cut short on disk) is dropped and fetched again, not a 502 for good."""
    cache = tmp_path / "cache"
    proxy = start_proxy({"ch": {"upstream": shards_only.url}}, cache=cache)
    assert httpx.get(f"{proxy.url}/ch/{PACKAGE}", timeout=30).status_code == 200
    path = shard_path(channel_dir, "linux-64", "datatool")
    digest = path.rsplit("/", 1)[1].split(".")[0]
    deadline = time.monotonic() + 10  # small files are made durable after the burst
    while not (blobs := [p for p in cache.rglob(f"*{digest}*") if p.is_file()]):
        assert time.monotonic() < deadline, "the shard was never cached"
        time.sleep(0.1)
    for blob in blobs:
        blob.write_bytes(blob.read_bytes()[:10])
    other = "linux-64/datatool-0.9-h0.conda"  # same name, same shard, not cached yet
    got = httpx.get(f"{proxy.url}/ch/{other}", timeout=30)
    assert got.status_code == 200, got.text
    assert got.content == (channel_dir / other).read_bytes()
    assert shards_only.count("GET", path) == 2, "the damaged shard was fetched again"
