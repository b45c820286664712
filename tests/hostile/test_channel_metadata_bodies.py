"""A channel's other metadata files (channeldata.json, notices.json, tos.json, run_exports.json
and its .zst, patch_instructions.json) are passed through as the upstream's bytes, but like
repodata only once they read as what each of them is, a JSON object. A captive portal's login
page, a CDN's error page or a cut-off document answered with a 200 is the upstream's error: a
good copy already cached keeps being served (stale), and with none the client gets a 502
naming the upstream, never the page as `application/json`.

Real processes: the test upstream and `condaproxy serve`."""

from __future__ import annotations

import json
import os
import time

import pytest
import zstandard

from tests.support.hostile import HostileSetup as Setup

pytestmark = pytest.mark.integration

PKG = "linux-64/small-1.0-0.conda"
TTL = 1
FILES = [
    "channeldata.json",
    "notices.json",
    "tos.json",
    "linux-64/run_exports.json",
    "linux-64/run_exports.json.zst",
    "linux-64/patch_instructions.json",
]
PORTAL = b"<html><body>Sign in to the hotel network<script>go()</script></body></html>"
BAD = {
    "an HTML page": PORTAL,
    "a JSON array": b"[1, 2, 3]",
    "a JSON string": b'"channeldata"',
    "cut off": b'{"packages": {"small": {"version": "1.',
    "trailing garbage": b'{"packages": {}} <html>',
    "empty": b"",
}


def encoded(path: str, document: bytes) -> bytes:
    if path.endswith(".zst"):
        return zstandard.ZstdCompressor().compress(document)
    return document


def good(n: int) -> bytes:
    return json.dumps({"packages": {}, "version": n}).encode()


setup = Setup.fixture("metadata", {PKG: os.urandom(1024)}, ttl=TTL)


@pytest.mark.parametrize("body", list(BAD))
@pytest.mark.parametrize("path", FILES)
def test_a_body_that_is_no_json_object_is_a_502_naming_the_upstream(
    setup: Setup, path: str, body: str
) -> None:
    setup.fresh()
    setup.upstream.override(f"/{path}", encoded(path, BAD[body]))
    r = setup.get(path)
    assert r.status_code == 502, (r.status_code, r.content[:200])
    assert r.json()["upstream"] == f"{setup.upstream.url}/{path}"


@pytest.mark.parametrize("body", list(BAD))
@pytest.mark.parametrize("path", FILES)
def test_a_body_that_is_no_json_object_never_replaces_the_good_copy(
    setup: Setup, path: str, body: str
) -> None:
    setup.fresh()
    setup.upstream.override(f"/{path}", encoded(path, good(1)))
    first = setup.get(path)
    assert first.status_code == 200
    time.sleep(TTL + 0.1)
    setup.upstream.override(f"/{path}", encoded(path, BAD[body]))
    r = setup.get(path)
    assert r.status_code == 200
    assert r.headers["x-cache"] == "STALE"
    assert r.content == first.content


@pytest.mark.parametrize("path", FILES)
def test_a_new_json_object_replaces_the_copy(setup: Setup, path: str) -> None:
    setup.fresh()
    setup.upstream.override(f"/{path}", encoded(path, good(1)))
    assert setup.get(path).status_code == 200
    time.sleep(TTL + 0.1)
    setup.upstream.override(f"/{path}", encoded(path, good(2)))
    r = setup.get(path)
    assert r.status_code == 200
    assert r.content == encoded(path, good(2))
