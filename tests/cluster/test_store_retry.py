"""A bucket that stays down never makes a client wait for it. Once a call has failed, the
store is tried again only by the cluster's poll (every `retry_after`); clients' misses go
straight to the upstream meanwhile. Before, the first request after each `retry_after`
waited out the store's timeouts (a 7 s stall every 2 s here; with the defaults about 20 s
every 15 s). When the bucket answers again, the poll brings it back for everyone."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.cluster.replicas import start_replicas, wait_for
from tests.support.s3 import S3Server

pytestmark = pytest.mark.integration

# Each a cold miss of its own (cached after): .conda and .tar.bz2, linux-64 and noarch.
COLD = [
    "/linux-64/datatool-1.0-h2.conda",
    "/linux-64/libcore-2.1-h1.tar.bz2",
    "/noarch/pyutil-0.4-pyh0.conda",
    "/linux-64/libzlib-1.3-h0.conda",
]


def timed_get(url: str) -> tuple[int, float]:
    t0 = time.monotonic()
    got = httpx.get(url, timeout=60)
    return got.status_code, time.monotonic() - t0


def test_misses_never_wait_on_a_store_that_stays_down(
    upstream, start_proxy, tmp_path, s3_server: S3Server, bucket: str
) -> None:
    # storage_section: connect_timeout 1, timeout 2, retry_after 2; the poll every 0.5 s.
    (proxy,) = start_replicas(start_proxy, upstream.url, tmp_path, s3_server, bucket, 1, 0.5)
    httpx.get(f"{proxy.url}/local/linux-64/repodata.json", timeout=30)
    httpx.get(f"{proxy.url}/local/noarch/repodata.json", timeout=30)
    s3_server.pause()
    try:

        def failed() -> bool:
            """A call has failed (the store is marked down), not merely gone silent."""
            body = httpx.get(f"{proxy.url}/readyz", timeout=10).json()
            return body["storage"] == "unavailable" and "no answer" not in body["storage_error"]

        assert wait_for(failed, 30), "the store was never marked down"
        times = []
        for path in COLD:  # spread over more than one retry_after
            time.sleep(1.2)
            status, took = timed_get(f"{proxy.url}/local{path}")
            assert status == 200, path
            times.append(took)
    finally:
        s3_server.resume()
    assert max(times) < 1.0, f"a client waited on the dead store: {times}"
    ready = lambda: httpx.get(f"{proxy.url}/readyz", timeout=10).json()["storage"]  # noqa: E731
    assert wait_for(lambda: ready() == "ok", 20), "the poll never brought the store back"
