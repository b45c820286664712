"""Repodata answered with an `ETag` or `Last-Modified` that is no validator: a control
character in it, an unquoted or overlong tag, a date that is not one. The proxy kept the value
as sent and put it in the next revalidation's If-None-Match / If-Modified-Since; the HTTP
client refused to send a head holding a control character, and every request for that subdir
answered 500, the stale copy included, until the copy was purged. Now a validator is kept and
sent back only when it is one (rules/conditional.usable_etag, usable_date); without one the
revalidation is a plain GET. Each answer stays a 200 (or the stale copy), never a 500.

A raw socket upstream (a server library refuses to send such header values) and a real
`condaproxy serve` with repodata_ttl 0 (every request revalidates)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.hostile import http
from tests.support.processes import Proxy
from tests.support.raw_upstream import RawUpstream, purge, raw_proxy, whole

pytestmark = pytest.mark.integration

REPODATA = json.dumps({"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": {}})
DATE = b"Mon, 02 Jun 2025 10:00:00 GMT"
HEADS = {
    "etag with a control character": b'ETag: "a\x01b"\r\n',
    "etag with DEL": b'ETag: "a\x7fb"\r\n',
    "etag with a tab inside": b'ETag: "a\tb"\r\n',
    "weak etag with a control character": b'ETag: W/"\x1b[31m"\r\n',
    "last-modified with a control character": b"Last-Modified: Mon,\x01" + DATE[4:] + b"\r\n",
    "both with control characters": b'ETag: "\x02"\r\nLast-Modified: ' + DATE + b"\x03\r\n",
    "etag unquoted": b"ETag: abc def\r\n",
    "etag empty": b"ETag: \r\n",
    "etag of 7000 characters": b'ETag: "' + b"x" * 7000 + b'"\r\n',
    "last-modified not a date": b"Last-Modified: tomorrow, maybe\r\n",
    "usable ones, for reference": b'ETag: "v1"\r\nLast-Modified: ' + DATE + b"\r\n",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RawUpstream, Proxy]]:
    with raw_proxy(tmp_path_factory.mktemp("validators"), ttl=0) as started:
        yield started


@pytest.mark.parametrize("case", list(HEADS))
def test_a_hostile_validator_never_breaks_the_subdir(
    served: tuple[RawUpstream, Proxy], case: str
) -> None:
    upstream, proxy = served
    purge(proxy)
    upstream.answers = {"/linux-64/repodata.json": whole(REPODATA.encode(), HEADS[case])}
    url = f"{proxy.url}/raw/linux-64/repodata.json"
    with http() as client:
        first = client.get(url)
        assert first.status_code == 200, first.text
        again = client.get(url)  # a revalidation, with whatever validators were kept
        assert again.status_code == 200, f"{case}: {again.status_code} {again.text[:300]}"
        asked = client.get(url, headers={"if-none-match": first.headers["etag"]})
        assert asked.status_code == 304, f"{case}: {asked.status_code} {asked.text[:300]}"
        busy = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
        upstream.answers["/linux-64/repodata.json"] = lambda conn: conn.sendall(busy)
        stale = client.get(url, headers={"accept-encoding": "identity"})
    assert stale.status_code == 200, f"{case}: {stale.status_code} {stale.text[:300]}"
    assert stale.headers["x-cache"] == "STALE" and json.loads(stale.content)["info"]
