"""`Authorization: Basic` with bytes that are not base64's alphabet, against a real proxy.

A header's bytes are read as latin-1, so `Basic \\xe9` arrives as a non-ASCII string, which
`base64.b64decode` refuses with a plain ValueError (not binascii.Error): every route that
looks for a token answered 500, a private channel's repodata included (conda treats a 5xx as
fatal). Such a header carries no token: a private channel, the API and private pages answer
401 as to any stranger, public pages and files as to anyone.
"""

from __future__ import annotations

import http.client
import json

import pytest

from tests.support.hostile import no_crash_in_log
from tests.support.processes import Proxy

pytestmark = pytest.mark.integration

READER = "reader-token-0123abcd"
VALUES = [
    b"Basic \xe9",
    b"Basic \xb2\xb2==",
    b"Basic \xc3\xa9t\xc3\xa9",
    b"basic  \xff",
    b"Basic a\x80b=",
]
ROUTES = {  # what a request with no usable token gets
    "private-repodata": ("/priv/noarch/repodata.json", 401),
    "private-page": ("/priv/", 401),
    "public-repodata": ("/pub/noarch/repodata.json", 200),
    "status-page": ("/", 200),
    "api": ("/api/cache/stats", 401),
    "metrics": ("/metrics", 200),
    "unknown-channel": ("/nope/noarch/repodata.json", 404),
}


@pytest.fixture(scope="module")
def proxy(channel_dir, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from tests.support.processes import Upstream, write_config

    base = tmp_path_factory.mktemp("basic-bytes")
    upstream = Upstream(channel_dir).start()
    config = write_config(
        base / "proxy.toml",
        base / "cache",
        {"pub": {"upstream": upstream.url}, "priv": {"upstream": upstream.url, "private": True}},
        tokens={
            "reader": {"token": READER, "roles": {"priv": "read"}},
            "ops": {"token": "admin-token-0123abcd", "roles": {"*": "admin"}},
        },
    )
    started = Proxy(config).start()
    yield started
    started.stop()
    upstream.stop()


def get(proxy: Proxy, path: str, authorization: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=15)
    try:
        conn.putrequest("GET", path)
        conn.putheader("Authorization", authorization)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("value", VALUES, ids=lambda v: repr(v)[2:14])
@pytest.mark.parametrize("route", ROUTES, ids=list(ROUTES))
def test_basic_auth_with_non_base64_bytes_is_no_token_not_a_500(
    proxy: Proxy, route: str, value: bytes
) -> None:
    before = len(proxy.log())
    path, expected = ROUTES[route]
    status, body = get(proxy, path, value)
    assert status == expected, (status, body[:200])
    if status >= 400:
        json.loads(body)
    no_crash_in_log(proxy.log()[before:])


def test_a_good_basic_token_still_reads_the_private_channel(proxy: Proxy) -> None:
    import base64

    good = b"Basic " + base64.b64encode(f"me:{READER}".encode())
    assert get(proxy, "/priv/noarch/repodata.json", good)[0] == 200
