"""storage.max_size bounds the bucket's cache: the oldest blobs go, uploads never do, and the
replicas keep serving what their own disks hold."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.cluster.replicas import WRITE, start_replicas, wait_for
from tests.support.channel import Pkg, build_package
from tests.support.redis_server import RedisServer
from tests.support.s3 import S3Server

pytestmark = pytest.mark.integration

PACKAGES = [
    "/linux-64/datatool-0.9-h0.conda",
    "/linux-64/datatool-1.0-h2.conda",
    "/linux-64/libcore-2.1-h1.tar.bz2",
    "/linux-64/libzlib-1.3-h0.conda",
    "/noarch/pyutil-0.4-pyh0.conda",
]
MAX = 2500


def cas_bytes(s3: S3Server, bucket: str) -> int:
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix="prod/cas/")
    return sum(int(o["Size"]) for o in listed.get("Contents", []))


@pytest.mark.parametrize("with_redis", [True, False], ids=["redis", "no-redis"])
def test_the_bucket_cache_stays_under_max_size_and_uploads_are_never_evicted(
    upstream,
    start_proxy,
    tmp_path: Path,
    s3_server: S3Server,
    bucket: str,
    redis_server: RedisServer,
    with_redis: bool,
) -> None:
    a, b = start_replicas(
        start_proxy,
        upstream.url,
        tmp_path,
        s3_server,
        bucket,
        2,
        0.5,
        redis_server.url if with_redis else "",
        max_size=MAX,
        evict_interval=0.5,
    )
    tool = build_package(Pkg("internal-tool", "1.0", "h0", "linux-64"), tmp_path / "w", tmp_path)
    uploaded = httpx.post(
        f"{a.url}/api/channels/internal/upload/{tool.name}",
        content=tool.read_bytes(),
        headers={"x-api-key": WRITE},
        timeout=30,
    )
    assert uploaded.status_code == 201
    uploads_before = s3_server.keys(bucket, "prod/uploads/")
    for path in PACKAGES:
        assert httpx.get(f"{a.url}/local{path}", timeout=30).status_code == 200
    cached = a.events_where(lambda e: e.get("event") == "cached", len(PACKAGES))
    assert a.events_where(lambda e: e.get("event") == "replicated to shared storage", len(cached))
    assert wait_for(lambda: cas_bytes(s3_server, bucket) <= MAX, 10), cas_bytes(s3_server, bucket)

    def evicted() -> int:  # logged just after the objects go: wait for the line too
        events = [e for p in (a, b) for e in p.events()]
        return sum(
            int(e["bytes"]) for e in events if e.get("event") == "evicted from shared storage"
        )

    assert wait_for(lambda: evicted() > 0, 10)
    assert s3_server.keys(bucket, "prod/uploads/") == uploads_before
    for path in PACKAGES:  # A's own disk still holds them all
        assert httpx.get(f"{a.url}/local{path}", timeout=30).headers["x-cache"] == "HIT"
    # Without Redis, B learns of the upload within the poll interval (0.5 s) of its start.
    url = f"{b.url}/internal/linux-64/{tool.name}"
    assert wait_for(lambda: httpx.get(url, timeout=30).status_code == 200, 5)
    got = httpx.get(url, timeout=30)
    assert got.status_code == 200 and got.content == tool.read_bytes()
