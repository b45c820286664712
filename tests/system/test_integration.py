"""The proxy as a separate process in front of a real local upstream server."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.integration

PKG_PATH = "/linux-64/datatool-1.0-h2.conda"


async def fetch_many(url: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        return await asyncio.gather(*(client.get(url) for _ in range(n)))


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_cold_requests_make_one_upstream_request(
    upstream, start_proxy, channel_dir: Path, workers: int
) -> None:
    proxy = start_proxy({"local": {"upstream": upstream.url}}, workers=workers)
    upstream.mode("slow")  # every 1 MiB chunk waits 0.2 s, so the requests overlap
    responses = asyncio.run(fetch_many(f"{proxy.url}/local{PKG_PATH}", 64))
    expected = (channel_dir / PKG_PATH.lstrip("/")).read_bytes()
    assert [r.status_code for r in responses] == [200] * 64
    assert all(r.content == expected for r in responses)
    assert upstream.count("GET", PKG_PATH) == 1
    outcomes = sorted(r.headers["x-cache"] for r in responses)
    assert outcomes.count("MISS") == 1


def test_kill_9_during_a_download_leaves_nothing_half_written(
    upstream, start_proxy, channel_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    proxy = start_proxy({"local": {"upstream": upstream.url}}, cache=cache)
    upstream.mode("slow")
    with httpx.stream("GET", f"{proxy.url}/local{PKG_PATH}", timeout=10) as response:
        assert response.status_code == 200
        # Under way (a small package is gathered in memory, a big one in a temp file).
        assert upstream.count("GET", PKG_PATH) == 1
        proxy.stop(kill=True)
    package_sha = hashlib.sha256((channel_dir / PKG_PATH.lstrip("/")).read_bytes()).hexdigest()
    # (the package's shard, which held its record, was verified and kept before the package)
    assert not list((cache / "blobs").rglob(package_sha)), "no part of the package was kept"

    upstream.mode("ok")
    again = start_proxy({"local": {"upstream": upstream.url}}, cache=cache)
    assert not list((cache / "tmp").iterdir()), "start-up swept the orphaned temp file"
    body = httpx.get(f"{again.url}/local{PKG_PATH}").content
    assert body == (channel_dir / PKG_PATH.lstrip("/")).read_bytes()
    assert upstream.count("GET", PKG_PATH) == 2


def test_truncated_upstream_body_is_aborted_and_not_cached(upstream, start_proxy, channel_dir):
    proxy = start_proxy({"local": {"upstream": upstream.url}})
    assert httpx.get(f"{proxy.url}/local/linux-64/repodata.json").status_code == 200
    upstream.mode("truncate")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{proxy.url}/local{PKG_PATH}", timeout=10)
    upstream.mode("ok")
    response = httpx.get(f"{proxy.url}/local{PKG_PATH}", timeout=10)
    assert response.status_code == 200 and response.headers["x-cache"] == "MISS"
    assert response.content == (channel_dir / PKG_PATH.lstrip("/")).read_bytes()


def test_upstream_credentials_never_reach_logs_or_clients(upstream, start_proxy):
    secret = "sekr1t-token-value-42"
    proxy = start_proxy(
        {"private": {"upstream": upstream.url, "upstream_token": "env:ORG_TOKEN"}},
        env={"ORG_TOKEN": secret},
    )
    response = httpx.get(f"{proxy.url}/private/noarch/repodata.json")
    assert response.status_code == 404  # our upstream has nothing under /t/<token>/
    assert upstream.count("GET", f"/t/{secret}/noarch/repodata.json") == 1
    assert secret not in response.text
    assert secret not in proxy.log()
    # The error still says which upstream URL failed, with the token masked.
    assert "/t/***/noarch/repodata.json" in response.json()["error"]


def test_label_paths_and_channel_root_files_map_to_the_upstream(upstream, start_proxy):
    proxy = start_proxy({"local": {"upstream": upstream.url}})
    httpx.get(f"{proxy.url}/local/label/dev/noarch/repodata.json")
    assert upstream.count("GET", "/label/dev/noarch/repodata.json.zst") == 1
    assert upstream.count("GET", "/label/dev/noarch/repodata.json") == 1
    response = httpx.get(f"{proxy.url}/local/channeldata.json")
    assert response.status_code == 404 and "error" in response.json()
    assert upstream.count("GET", "/channeldata.json") == 1


def test_bad_config_stops_start_up_with_one_line(tmp_path: Path):
    config = tmp_path / "bad.toml"
    config.write_text('[channels.x]\nupstream = "not a url"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "condaproxy", "serve", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(config) in lines[0] and "channels.x.upstream" in lines[0]


def test_concurrent_cold_repodata_requests_make_one_upstream_request(upstream, start_proxy):
    proxy = start_proxy({"local": {"upstream": upstream.url}})
    upstream.mode("slow")

    async def storm() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            names = ["repodata.json", "repodata.json.zst", "current_repodata.json"] * 10
            return await asyncio.gather(
                *(client.get(f"{proxy.url}/local/noarch/{n}") for n in names)
            )

    responses = asyncio.run(storm())
    assert all(r.status_code == 200 for r in responses)
    assert len({r.content for r in responses if not r.url.path.endswith(".zst")}) == 1
    assert upstream.count("GET", "/noarch/repodata.json.zst") == 1
    assert upstream.count("GET", "/noarch/repodata.json") == 0


def test_sigterm_stops_waiting_for_responses_after_shutdown_timeout(upstream, start_proxy) -> None:
    """A response that would outlast `server.shutdown_timeout` is cut off then (the client sees
    an incomplete body, never a complete wrong one) and the process exits: an orchestrator's
    grace period can be made to cover the drain."""
    import signal
    import threading
    import time

    proxy = start_proxy(
        {"local": {"upstream": upstream.url}}, env={"CONDAPROXY_SERVER_SHUTDOWN_TIMEOUT": "1"}
    )
    body = bytes(range(250))
    # 10 s in all: longer than any drain that obeys the timeout, short enough that the
    # upstream (which trickles on to a closed socket) still stops within its own 10 s
    upstream.override("/noarch/slow-1.0-0.conda", body, trickle=0.04)
    outcome: list[object] = []

    def download() -> None:
        try:
            got = httpx.get(f"{proxy.url}/local/noarch/slow-1.0-0.conda", timeout=60)
            outcome.append(got.content)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    client = threading.Thread(target=download)
    client.start()
    deadline = time.monotonic() + 10
    while upstream.count("GET", "/noarch/slow-1.0-0.conda") == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert proxy.proc is not None
    signalled = time.monotonic()
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(15) in (0, -signal.SIGTERM)
    assert time.monotonic() - signalled < 6, "the drain did not stop at shutdown_timeout"
    client.join(15)
    assert outcome and outcome[0] != body, "the trickled body cannot have been completed"


def test_sigterm_drains_an_in_flight_download_then_exits_cleanly(
    upstream, start_proxy, channel_dir: Path
) -> None:
    import signal
    import threading

    proxy = start_proxy({"local": {"upstream": upstream.url}})
    upstream.mode("slow")
    received: list[bytes] = []

    def download() -> None:
        received.append(httpx.get(f"{proxy.url}/local{PKG_PATH}", timeout=30).content)

    client = threading.Thread(target=download)
    client.start()
    import time

    deadline = time.monotonic() + 10
    while upstream.count("GET", PKG_PATH) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proxy.proc is not None
    proxy.proc.send_signal(signal.SIGTERM)  # mid-download
    client.join(30)
    assert received == [(channel_dir / PKG_PATH.lstrip("/")).read_bytes()]
    # uvicorn re-raises SIGTERM once it has shut down (exit status 143 under Docker).
    assert proxy.proc.wait(30) in (0, -signal.SIGTERM)
    events = [e["event"] for e in proxy.events()]
    assert "cached" in events, "the download finished and was kept"
    assert events.index("cached") < events.index("stopped"), "shutdown completed after it"
