"""A replica killed while it owns a download: its clients are aborted (never a complete wrong
body), the lease runs out, and the next request on another replica succeeds; nothing partial
or wrong is ever in the bucket. And replicas with storage configured stop cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.cluster.conftest import BIG_PATH
from tests.cluster.replicas import start_replicas, wait_for
from tests.support.processes import Upstream
from tests.support.redis_server import RedisServer
from tests.support.s3 import S3Server

pytestmark = pytest.mark.integration


def test_owner_killed_mid_download_aborts_its_clients_and_another_replica_serves_next(
    big_upstream: Upstream,
    start_proxy,
    tmp_path: Path,
    s3_server: S3Server,
    bucket: str,
    redis_server: RedisServer,
) -> None:
    a, b = start_replicas(
        start_proxy,
        big_upstream.url,
        tmp_path,
        s3_server,
        bucket,
        2,
        0.5,
        redis_server.url,
        cluster={"lease": 2},  # a dead owner's lease runs out in 2 s
    )
    for proxy in (a, b):
        assert httpx.get(f"{proxy.url}/local/linux-64/repodata.json", timeout=30).is_success
    expected = (Path(big_upstream.directory) / BIG_PATH.lstrip("/")).read_bytes()
    big_upstream.mode("slow")
    got: dict[str, object] = {}

    def owner_client() -> None:
        try:
            with httpx.stream("GET", f"{a.url}/local{BIG_PATH}", timeout=30) as response:
                body = b""
                for chunk in response.iter_bytes():
                    body += chunk
                    got["bytes"] = len(body)
                got["body"] = body
        except httpx.HTTPError as exc:
            got["error"] = type(exc).__name__

    client = threading.Thread(target=owner_client)
    client.start()
    assert wait_for(lambda: int(got.get("bytes", 0)) > 1 << 20, 20), "owner never streamed"
    # B's client arrives while A holds the lease: it waits for A's copy...
    waiter: dict[str, httpx.Response] = {}
    second = threading.Thread(
        target=lambda: waiter.update(r=httpx.get(f"{b.url}/local{BIG_PATH}", timeout=60))
    )
    second.start()
    time.sleep(0.3)
    a.stop(kill=True)  # ...and A dies mid-download
    client.join(30)
    assert got.get("body") != expected, "a client of the killed owner got a complete body"
    assert "error" in got or len(got.get("body", b"")) < len(expected)  # type: ignore[arg-type]
    second.join(60)
    assert waiter["r"].status_code == 200 and waiter["r"].content == expected
    assert big_upstream.count("GET", BIG_PATH) == 2  # A's broken fetch, then B's own
    sha = hashlib.sha256(expected).hexdigest()
    assert wait_for(lambda: f"prod/cas/sha256/{sha[:2]}/{sha}" in s3_server.keys(bucket))
    client_s3 = s3_server.client()
    for key in s3_server.keys(bucket, "prod/cas/"):
        body = client_s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == key.rsplit("/", 1)[1], key


def test_replicas_with_storage_exit_cleanly_on_sigterm(
    upstream, start_proxy, tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    for round_ in range(20):  # the issue asks for 20 clean exits
        (proxy,) = start_replicas(
            start_proxy, upstream.url, tmp_path / str(round_), s3_server, bucket, 1
        )
        assert httpx.get(f"{proxy.url}/local/linux-64/repodata.json", timeout=30).is_success
        assert asyncio.run(_one(proxy.url)) == 200
        proxy.stop()
        # uvicorn re-raises SIGTERM once shut down: -SIGTERM is a clean exit, SIGABRT is not.
        assert proxy.proc is not None and proxy.proc.returncode in (0, -signal.SIGTERM)
        assert '"shutdown complete"' in proxy.log() and "Traceback" not in proxy.log()


async def _one(url: str) -> int:
    async with httpx.AsyncClient(timeout=30) as client:
        return (await client.get(f"{url}/local/linux-64/datatool-1.0-h2.conda")).status_code
