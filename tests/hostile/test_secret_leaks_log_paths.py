"""A client's `/t/<token>/` path token never reaches the log, however it is spelt. The access
event's `path` is the decoded path, and the masking read the token up to the next `/`, space
or quote: a token sent with `%2F`, `%20`, `%27` or `%22` in it (or a raw quote) came out of
decoding as a separator, a space or a quote, so only its first part was masked and the rest
was logged in clear (`/t/***/rest-of-the-token/...`). The proxy refuses such a token (400),
but the token may still be a real one of the client's, one character off. The segment is now
masked whole, read from the path as sent.

Real processes: the proxy in front of the test upstream; one request per spelling."""

from __future__ import annotations

import http.client
import time

import pytest

from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

HEAD = "FirstHalfOfTheToken1357"
TAIL = "SecondHalfOfTheToken2468"
READER = "reader-token-for-paths-0001"
# How the token's two halves are joined in the path the client sends.
SPELLINGS = {
    "encoded-slash": "%2F",
    "encoded-lowercase-slash": "%2f",
    "encoded-space": "%20",
    "encoded-quote": "%27",
    "encoded-double-quote": "%22",
    "raw-quote": "'",
    "encoded-backslash": "%5C",
    "encoded-newline": "%0A",
    "encoded-nul": "%00",
    "plain": "",
}
WHERE = {
    "prefix": "/t/{}/pub/linux-64/repodata.json",
    "encoded-t": "/%74/{}/pub/linux-64/repodata.json",
    "page": "/t/{}/pub/",
    "api": "/t/{}/api/cache/stats",
    "unknown-channel": "/t/{}/nope/linux-64/repodata.json",
}


@pytest.fixture(scope="module")
def proxy(channel_dir, tmp_path_factory):  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("log-paths")
    upstream = Upstream(channel_dir).start()
    config = write_config(
        base / "proxy.toml",
        base / "cache",
        {"pub": {"upstream": upstream.url}},
        tokens={"reader": {"token": READER, "roles": {"pub": "read"}}},
    )
    started = Proxy(config).start()
    yield started
    started.stop()
    upstream.stop()


def send(proxy: Proxy, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=15)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.parametrize("where", list(WHERE))
@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_no_part_of_a_path_token_is_logged(proxy: Proxy, spelling: str, where: str) -> None:
    token = f"{HEAD}{SPELLINGS[spelling]}{TAIL}"
    path = WHERE[where].format(token)
    before = len(proxy.log())
    status = send(proxy, path)
    assert status < 500, status
    deadline = time.monotonic() + 10
    while '"status":' not in proxy.log()[before:] and time.monotonic() < deadline:
        time.sleep(0.02)
    logged = proxy.log()[before:]
    assert '"status":' in logged, f"no access event for the request ({status}): {logged[:600]}"
    for half in (HEAD, TAIL):
        assert half not in logged, f"{half} of the client's token in the log: {logged[:600]}"
    assert "/***/" in logged
