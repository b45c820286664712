"""A client that chooses the `Host` (or `X-Forwarded-Host`, from an untrusted address) and asks
for a path of the proxy's own API that names no endpoint, with and without a trailing slash,
against a real proxy. Starlette's router answered `/api/channels` with a 307 to
`http://<that host>/api/channels/` (an open redirect built from what the client sent, with an
empty body), and the edge takes one trailing slash off again, so `/api/channels/` redirected
to itself for ever. Every such answer is the proxy's JSON 404, names no host, and redirects
nowhere; endpoints with a trailing slash still answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

ADMIN = "admin-token-13579"
TOKENS = {"ops": {"token": ADMIN, "roles": {"*": "admin"}}}
EVIL = "evil.example"


@pytest.fixture(scope="module")
def proxy(channel_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    base = tmp_path_factory.mktemp("host-redirects")
    upstream = Upstream(channel_dir).start()
    channels: dict[str, dict[str, object]] = {"pub": {"upstream": upstream.url}, "team": {}}
    config = write_config(base / "proxy.toml", base / "cache", channels, tokens=TOKENS)
    started = Proxy(config).start()
    yield started
    started.stop()
    upstream.stop()


HOSTILE_HEADERS = [
    {"host": EVIL},
    {"host": f"{EVIL}:8443"},
    {"x-forwarded-host": EVIL, "x-forwarded-proto": "https"},
]
NO_ENDPOINT = ["/api/channels", "/api/channels/", f"/t/{ADMIN}/api/channels"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "DELETE"])
@pytest.mark.parametrize("path", NO_ENDPOINT)
@pytest.mark.parametrize("headers", HOSTILE_HEADERS, ids=["host", "host-port", "forwarded"])
def test_no_api_path_redirects_to_a_host_the_client_chose(proxy, method, path, headers):
    answer = httpx.request(
        method,
        f"{proxy.url}{path}",
        headers={**headers, "x-api-key": ADMIN},
        follow_redirects=False,
        timeout=10,
    )
    assert not answer.is_redirect, answer.headers
    assert "location" not in answer.headers
    assert answer.status_code == 404, answer.text
    assert answer.headers["content-type"] == "application/json"
    if method != "HEAD":
        assert answer.json()["status"] == 404
        assert EVIL not in answer.text


@pytest.mark.parametrize(
    "path", ["/api/channels/team/packages/", "/api/cache/stats/", "/api/policy/", "/healthz/"]
)
def test_endpoints_still_take_one_trailing_slash(proxy, path):
    answer = httpx.get(f"{proxy.url}{path}", headers={"x-api-key": ADMIN, "host": EVIL})
    assert answer.status_code == 200, answer.text
