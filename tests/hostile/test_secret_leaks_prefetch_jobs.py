"""A prefetch job never shows the channel's upstream credentials. When the upstream's metadata
failed its check after it had arrived (a repodata document of the wrong shape), the error
named the upstream URL the proxy had fetched, path token, `user:password@` and all: the
upload of an error body masked it, but a prefetch job keeps the message as it is, and
`GET /api/cache/stats` showed it in clear. Every ProxyError now
masks a URL's credentials in its message once, as it is made (rules/errors.py), so no
renderer can forget to.

Real processes: the test upstream serving the channel below `/t/<token>/`, its repodata
replaced by a document of the wrong shape; the proxy in front."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest
import zstandard

from tests.support.processes import Proxy, Upstream

pytestmark = pytest.mark.integration

TOKEN = "PathTokenForPrefetch4711"
PASSWORD = "PasswordForPrefetch0815"
LONE = "LoneUserTokenForPrefetch2323"
ADMIN = "admin-token-prefetch-0001"
CHANNELS = {
    "path-token": {"upstream_token": TOKEN},
    "path-token-and-password": {"upstream_token": TOKEN, "userinfo": f"me:{PASSWORD}@"},
    "lone-user-token": {"upstream_token": TOKEN, "userinfo": f"{LONE}@"},
}
# Documents that arrive whole and fail only the proxy's check of their shape.
BROKEN = {
    "info-not-an-object": {"info": 5, "packages": {}},
    "packages-not-a-map": {"info": {"subdir": "linux-64"}, "packages": []},
    "another-subdir": {"info": {"subdir": "osx-64"}, "packages": {}},
}
ITEMS = {"file": "libzlib-1.3-h0.conda", "spec": "libzlib >=1"}


@pytest.fixture
def home(tmp_path: Path, channel_dir: Path):  # type: ignore[no-untyped-def]
    shutil.copytree(channel_dir, tmp_path / "home" / "t" / TOKEN / "ch")
    server = Upstream(tmp_path / "home").start()
    yield server
    server.stop()


@pytest.fixture
def proxy(home: Upstream, start_proxy) -> Proxy:  # type: ignore[no-untyped-def]
    host = home.url.removeprefix("http://")
    channels = {
        name: {"upstream": f"http://{spec.get('userinfo', '')}{host}/ch", "upstream_token": TOKEN}
        for name, spec in CHANNELS.items()
    }
    tokens = {"ops": {"token": ADMIN, "roles": {"*": "admin"}}}
    return start_proxy(channels, tokens=tokens)


def break_metadata(home: Upstream, document: dict[str, object]) -> None:
    body = json.dumps(document).encode()
    for subdir in ("linux-64", "noarch"):
        base = f"/t/{TOKEN}/ch/{subdir}"
        home.override(f"{base}/repodata.json.zst", body=zstandard.compress(body))
        home.override(f"{base}/repodata.json", body=body)
        home.override(f"{base}/repodata_shards.msgpack.zst", status=404)


def finished(proxy: Proxy, job_id: str) -> tuple[dict[str, object], str]:
    headers = {"x-api-key": ADMIN}
    deadline = time.monotonic() + 30
    while True:
        stats = httpx.get(f"{proxy.url}/api/cache/stats", headers=headers, timeout=30)
        job = next(j for j in stats.json()["prefetch"] if j["id"] == job_id)
        if job["state"] in ("done", "failed") or time.monotonic() > deadline:
            return job, stats.text
        time.sleep(0.1)


@pytest.mark.parametrize("item", list(ITEMS))
@pytest.mark.parametrize("broken", list(BROKEN))
@pytest.mark.parametrize("channel", list(CHANNELS))
def test_a_failed_job_never_shows_the_upstream_credentials(
    proxy: Proxy, home: Upstream, channel: str, broken: str, item: str
) -> None:
    break_metadata(home, BROKEN[broken])
    url = f"{proxy.url}/api/cache/{channel}/linux-64/prefetch"
    body = {"packages": [ITEMS[item]]}
    accepted = httpx.post(url, json=body, headers={"x-api-key": ADMIN}, timeout=30)
    assert accepted.status_code == 202, accepted.text
    job, text = finished(proxy, accepted.json()["id"])
    assert job["state"] == "failed", job
    assert "upstream http://" in text  # the job names the upstream that failed...
    for secret in (TOKEN, PASSWORD, LONE):
        assert secret not in text, f"a credential in the job: {job}"  # ...without its secrets
    assert "/t/***/" in text
