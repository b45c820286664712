"""A client that writes into the proxy's log, against a real proxy: a request whose path is
tens of KiB long (refused with a 414) was logged with its whole path, one 60 KiB line per
request, on every route (channel files, the API, the pages). Log pipelines cut or drop such
lines (Loki, fluent-bit and journald have line limits). Every field of an event is now cut at
MAX_FIELD characters, after secrets are masked, so a token near the cut is never left half
visible."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from tests.support.processes import Proxy

pytestmark = pytest.mark.integration

TOKEN = "reader-token-4242abcdef"
LONG = "a" * 60000
MAX_FIELD = 2048  # condaproxy.web.logs.MAX_FIELD


@pytest.fixture
def proxy(upstream, start_proxy) -> Proxy:  # type: ignore[no-untyped-def]
    return start_proxy(
        {"pub": {"upstream": upstream.url}},
        tokens={"reader": {"token": TOKEN, "roles": {"pub": "read"}}},
    )


def send(proxy: Proxy, method: str, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=15)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


PATHS = {
    "channel-file": ("GET", f"/pub/linux-64/{LONG}.conda"),
    "channel-page": ("GET", f"/pub/{LONG}/"),
    "api": ("DELETE", f"/api/cache/pub/{LONG}"),
    "unknown": ("GET", f"/{LONG}"),
    # A real token just before the cut: masked whole, never half.
    "token-at-the-cut": ("GET", "/" + "b" * (MAX_FIELD - 10) + f"/t/{TOKEN}/{LONG}"),
    "path-token": ("GET", f"/t/{TOKEN}/pub/{LONG}"),
}


@pytest.mark.parametrize("shape", PATHS, ids=list(PATHS))
def test_a_huge_path_makes_one_short_log_line(proxy: Proxy, shape: str) -> None:
    before = len(proxy.log())
    method, path = PATHS[shape]
    assert send(proxy, method, path) in (400, 404, 414)
    deadline = time.monotonic() + 5
    while '"status":' not in proxy.log()[before:] and time.monotonic() < deadline:
        time.sleep(0.02)
    new = proxy.log()[before:]
    assert '"status":' in new, "no access event for the request"
    longest = max(len(line) for line in new.splitlines())
    assert longest < 2 * MAX_FIELD + 1024, f"a log line of {longest} characters"
    assert TOKEN not in new and TOKEN[:12] not in new
    for line in new.splitlines():
        json.loads(line)  # still one JSON event per line
