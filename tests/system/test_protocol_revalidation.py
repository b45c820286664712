"""PROTOCOL.md, caching headers, asked of a real proxy process the way conda, mamba and rattler
ask: each URL (and each coding of `repodata.json`) has its own strong ETag; a client holding it
gets a 304 to GET and HEAD, whatever form its If-None-Match takes (weak, in a list, `*`); a
client holding only a date (anaconda.org channels sent only Last-Modified) gets a 304 for it;
If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2); a 304 carries the Cache-Control
that resets the client's clock. And the coding of `repodata.json` follows Accept-Encoding with
its q-values, never a coding the client did not accept.

Found conforming in the audit of PROTOCOL.md (no fix needed): kept as a regression test."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator

import httpx
import pytest
import zstandard

from tests.support.hostile import http, listed_channel
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

PACKAGE = "linux-64/tool-1.0-0.conda"
# (path below the channel, Accept-Encoding, the Content-Encoding it is served with)
VARIANTS = [
    ("linux-64/repodata.json", "identity", None),
    ("linux-64/repodata.json", "gzip, deflate", "gzip"),
    ("linux-64/repodata.json", "gzip, deflate, br, zstd", "zstd"),
    ("linux-64/repodata.json.zst", "gzip", None),
    ("linux-64/repodata.json.bz2", "gzip", None),
    ("linux-64/current_repodata.json", "gzip", "gzip"),
    ("noarch/repodata.json", "identity", None),
    (PACKAGE, "identity", None),
]
IDS = [f"{path}|{accept}" for path, accept, _ in VARIANTS]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    channel = listed_channel(tmp_path_factory.mktemp("revalidation"), {PACKAGE: b"t" * 4096})
    server = Upstream(channel).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    base = tmp_path_factory.mktemp("revalidation-proxy")
    config = write_config(
        base / "p.toml", base / "cache", {"cf": {"upstream": upstream.url}}, ttl=600
    )
    started = Proxy(config).start()
    yield started
    started.stop()


def first(client: httpx.Client, url: str, accept: str) -> httpx.Response:
    """The client's first answer, from the proxy's copy (a package streamed on its first
    download carries no Last-Modified yet: its ETag, the published sha256, is the validator)."""
    got = client.get(url, headers={"accept-encoding": accept})
    deadline = time.monotonic() + 10
    while "last-modified" not in got.headers and time.monotonic() < deadline:
        time.sleep(0.05)  # the download is adopted just after its last byte is sent
        got = client.get(url, headers={"accept-encoding": accept})
    assert got.status_code == 200, got.text
    assert got.headers["etag"].startswith('"'), "a strong ETag"
    return got


@pytest.mark.parametrize(("path", "accept", "coding"), VARIANTS, ids=IDS)
def test_a_client_holding_the_etag_or_the_date_gets_a_304(
    proxy: Proxy, path: str, accept: str, coding: str | None
) -> None:
    url = f"{proxy.url}/cf/{path}"
    with http(timeout=30) as client:
        got = first(client, url, accept)
        etag, modified = got.headers["etag"], got.headers["last-modified"]
        assert got.headers.get("content-encoding") == coding
        held = {
            "exact": {"if-none-match": etag},
            "weak": {"if-none-match": f"W/{etag}"},
            "listed": {"if-none-match": f'"something-else", {etag}'},
            "any": {"if-none-match": "*"},
            "date only": {"if-modified-since": modified},
            "etag over an old date": {
                "if-none-match": etag,
                "if-modified-since": "Mon, 01 Jan 1990 00:00:00 GMT",
            },
        }
        for form, headers in held.items():
            for method in ("GET", "HEAD"):
                again = client.request(method, url, headers={"accept-encoding": accept, **headers})
                assert again.status_code == 304, (form, method, again.status_code)
                assert again.content == b""
                assert again.headers["etag"] == etag, form
                assert "max-age=" in again.headers["cache-control"], form
        # If-None-Match wins over If-Modified-Since: another ETag is a new body, date or not
        other = {"if-none-match": '"something-else"', "if-modified-since": modified}
        for method in ("GET", "HEAD"):
            fresh = client.request(method, url, headers={"accept-encoding": accept, **other})
            assert fresh.status_code == 200, method
            assert fresh.headers["etag"] == etag


def test_each_variant_and_coding_has_its_own_etag(proxy: Proxy) -> None:
    with http(timeout=30) as client:
        etags = [first(client, f"{proxy.url}/cf/{p}", a).headers["etag"] for p, a, _ in VARIANTS]
        assert len(set(etags)) == len(etags), etags
        # the ETag of one coding does not answer a request that gets another
        gzip_etag = etags[1]
        url = f"{proxy.url}/cf/linux-64/repodata.json"
        for accept in ("identity", "zstd"):
            other = client.get(url, headers={"accept-encoding": accept, "if-none-match": gzip_etag})
            assert other.status_code == 200, accept


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        (None, None),  # no Accept-Encoding: plain JSON, whatever RFC 9110 would allow
        ("", None),
        ("identity", None),
        ("gzip", "gzip"),
        ("GZIP", "gzip"),
        ("zstd", "zstd"),
        ("gzip;q=0.5, zstd;q=1", "zstd"),
        ("zstd;q=0, gzip", "gzip"),
        ("zstd;q=0.001, gzip;q=0.002", "gzip"),
        ("gzip;q=0", None),
        ("*;q=0, identity", None),
        ("br", None),
        ("deflate", None),
    ],
)
def test_repodata_json_comes_in_a_coding_the_client_accepts(
    proxy: Proxy, accept: str | None, coding: str | None
) -> None:
    url = f"{proxy.url}/cf/linux-64/repodata.json"
    headers = {} if accept is None else {"accept-encoding": accept}
    with http(timeout=30) as client:
        request = client.build_request("GET", url, headers=headers)
        if accept is None:
            del request.headers["accept-encoding"]  # httpx adds its own otherwise
        response = client.send(request, stream=True)
        try:
            body = b"".join(response.iter_raw())
        finally:
            response.close()
    assert response.status_code == 200
    assert response.headers.get("content-encoding") == coding
    assert "accept-encoding" in response.headers["vary"].lower()
    assert int(response.headers["content-length"]) == len(body)
    if coding == "gzip":
        body = gzip.decompress(body)
    elif coding == "zstd":
        body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
    assert json.loads(body)["info"]["subdir"] == "linux-64"
