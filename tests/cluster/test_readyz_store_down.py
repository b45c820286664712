"""README "What a client sees when something fails": while the bucket is down, /readyz says
`"storage": "unavailable"` with the reason. It said "ok" most of the time: the store is only
marked down for `retry_after` after a failed call, and the next call (the poll's) hangs for
its timeout and a retry before failing again, so a bucket down for good read as "ok" ~80% of
the time. Now a failing poll round, or one waiting past `storage.timeout`, counts as down."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.cluster.replicas import start_replicas, wait_for
from tests.support.s3 import S3Server

pytestmark = pytest.mark.integration


def storage(url: str) -> str:
    return str(httpx.get(url + "/readyz", timeout=10).json()["storage"])


def test_readyz_says_unavailable_for_as_long_as_the_bucket_is_down(
    upstream, start_proxy, tmp_path, s3_server: S3Server, bucket: str
) -> None:
    # storage_section: connect_timeout 1, timeout 2, retry_after 2; the poll every 0.5 s.
    (proxy,) = start_replicas(start_proxy, upstream.url, tmp_path, s3_server, bucket, 1, 0.5)
    assert storage(proxy.url) == "ok"
    s3_server.pause()
    try:
        assert wait_for(lambda: storage(proxy.url) == "unavailable", 5), "never said so"
        seen = []
        deadline = time.monotonic() + 5  # past retry_after (2 s) into the next hung call
        while time.monotonic() < deadline:
            seen.append(storage(proxy.url))
            time.sleep(0.2)
        body = httpx.get(proxy.url + "/readyz", timeout=10).json()
    finally:
        s3_server.resume()
    assert set(seen) == {"unavailable"}, "".join(s[0] for s in seen)
    assert "s3://" in body["storage_error"]
    assert wait_for(lambda: storage(proxy.url) == "ok", 15), "never came back"
