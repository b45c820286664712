"""Both fetchers (transports.py) for real, against the test upstream on 127.0.0.1: aiohttp, the
production one, and httpx over the pinned pool. Bodies whole and undecoded, broken bodies 502,
stalls 504, refused connections 502 naming the masked upstream, credentials dropped on a
redirect to another origin, and connections pinned to the addresses that were checked."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
from collections.abc import AsyncIterator, Callable

import pytest

from condaproxy.cache.transports import (
    CHUNK,
    USER_AGENT,
    AiohttpFetcher,
    HttpxFetcher,
    production_fetcher,  # bound before conftest swaps it for in-process tests
)
from condaproxy.cache.upstream import UpstreamClient
from condaproxy.rules.errors import UpstreamError, UpstreamTimeout
from condaproxy.rules.redact import Redactor
from condaproxy.settings import ChannelSettings, Secret, UpstreamSettings
from tests.support.processes import Upstream, free_port

TOKEN = "tk-fetcher-secret-0001"
BEARER = "bearer-fetcher-secret-0002"
SETTINGS = UpstreamSettings(connect_timeout=2, read_timeout=0.5)
FETCHERS = {"aiohttp": AiohttpFetcher, "httpx": HttpxFetcher}
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class Dns:
    """Names from a table; anything else does not resolve."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = table or {}

    async def __call__(self, host: str, port: int) -> list[str]:
        return self.table.get(host, [])


@pytest.fixture
def no_env_proxy(monkeypatch):
    """An egress proxy from the environment resolves names itself: pinning is off then."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


Make = Callable[..., UpstreamClient]


@pytest.fixture(params=sorted(FETCHERS))
async def make(request, no_env_proxy) -> AsyncIterator[Make]:
    made: list[UpstreamClient] = []

    def build(dns: Dns | None = None, settings: UpstreamSettings = SETTINGS) -> UpstreamClient:
        fetcher = FETCHERS[request.param](settings)
        client = UpstreamClient(
            settings, Redactor([TOKEN, BEARER]), resolver=dns or Dns(), fetcher=fetcher
        )
        made.append(client)
        return client

    yield build
    for client in made:
        await client.aclose()


async def pieces(client: UpstreamClient, channel: ChannelSettings, url: str) -> list[bytes]:
    async with client.open(channel, url) as response:
        return [chunk async for chunk in response.iter_bytes()]


def plain(upstream: Upstream, **extra: object) -> ChannelSettings:
    return ChannelSettings("loop", upstream.url, **extra)  # type: ignore[arg-type]


# Bodies


@pytest.mark.parametrize(
    "body",
    [b"", b"x", os.urandom(CHUNK * 3 + 17), gzip.compress(b'{"packages": {}}' * 1000)],
    ids=["empty", "one-byte", "3MiB+17", "gzip"],
)
async def test_a_body_arrives_whole_and_undecoded(make, upstream, body):
    upstream.override("/noarch/blob", body, headers={"content-encoding": "gzip"})
    got = await pieces(make(), plain(upstream), f"{upstream.url}/noarch/blob")
    assert b"".join(got) == body, "bytes as sent, no content decoding"
    assert all(0 < len(p) <= CHUNK for p in got)


async def test_a_real_package_arrives_with_its_sha256(make, upstream, channel_dir):
    package = next(channel_dir.glob("linux-64/*.conda"))
    relative = package.relative_to(channel_dir).as_posix()
    got = await pieces(make(), plain(upstream), f"{upstream.url}/{relative}")
    assert hashlib.sha256(b"".join(got)).digest() == hashlib.sha256(package.read_bytes()).digest()


async def test_head_304_and_headers_pass_through(make, upstream, channel_dir):
    client, channel = make(), plain(upstream)
    url = f"{upstream.url}/noarch/repodata.json"
    async with client.open(channel, url, method="HEAD") as head:
        assert head.status == 200
        assert head.content_length == (channel_dir / "noarch/repodata.json").stat().st_size
        etag = head.headers["ETag"]  # any case
    async with client.open(channel, url, headers={"if-none-match": etag}) as again:
        assert again.status == 304 and [c async for c in again.iter_bytes()] == []
    seen = upstream.seen()[-1]["headers"]
    assert seen["user-agent"] == USER_AGENT
    assert seen["if-none-match"] == etag


async def test_the_callers_accept_encoding_is_what_upstream_sees(make, upstream):
    client, channel = make(), plain(upstream)
    for coding in ("identity", "gzip, deflate"):
        async with client.open(
            channel, f"{upstream.url}/noarch/repodata.json", headers={"accept-encoding": coding}
        ):
            pass
        assert upstream.seen()[-1]["headers"]["accept-encoding"] == coding


# Failures: 502 for broken, 504 for slow, the masked upstream named, no credential shown


@pytest.mark.parametrize("sent", [0, 1000, CHUNK + 5])
async def test_a_body_cut_short_is_an_upstream_error_not_a_short_file(make, upstream, sent):
    upstream.override("/noarch/cut", os.urandom(CHUNK * 2), break_after=sent)
    with pytest.raises(UpstreamError, match="body broken off") as info:
        await pieces(make(), plain(upstream), f"{upstream.url}/noarch/cut")
    assert info.value.status == 502 and f"{upstream.url}/noarch/cut" in info.value.message


async def test_a_stalled_body_is_a_504(make, upstream):
    upstream.override("/noarch/stall", b"late bytes", delay=2)
    client = make()
    with pytest.raises(UpstreamTimeout, match="timed out while reading the body") as info:
        await pieces(client, plain(upstream), f"{upstream.url}/noarch/stall")
    assert info.value.status == 504 and "/noarch/stall" in info.value.message


async def test_a_head_that_never_comes_is_a_504(make):
    served: list[asyncio.Task] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await reader.read()  # until the client gives up
        finally:
            writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    channel = ChannelSettings("mute", f"http://127.0.0.1:{port}", upstream_token=Secret(TOKEN))
    client = make()
    try:
        with pytest.raises(UpstreamTimeout) as info:
            await pieces(client, channel, UpstreamClient.url_for(channel, "noarch/x"))
    finally:
        await client.aclose()
        server.close()
        await asyncio.wait_for(asyncio.gather(*served), 5)
    assert info.value.status == 504 and TOKEN not in info.value.message
    assert f"127.0.0.1:{port}/t/***/noarch/x" in info.value.message


async def test_a_refused_connection_is_a_502_naming_the_masked_upstream(make):
    channel = ChannelSettings(
        "down", f"http://127.0.0.1:{free_port()}", upstream_token=Secret(TOKEN)
    )
    url = UpstreamClient.url_for(channel, "noarch/repodata.json")
    with pytest.raises(UpstreamError, match="cannot connect") as info:
        await pieces(make(), channel, url)
    assert info.value.status == 502 and TOKEN not in info.value.message
    assert "/t/***/noarch/repodata.json" in info.value.message


# Redirects: credentials only for the upstream's own origin, hop by hop

CREDENTIALED = {
    "bearer": {"upstream_token": Secret(TOKEN), "upstream_bearer": Secret(BEARER)},
    "basic": {
        "upstream_token": Secret(TOKEN),
        "upstream_username": "me",
        "upstream_password": Secret(BEARER),
    },
}


def carried(request: dict) -> bool:
    return "authorization" in request["headers"] or TOKEN in str(request)


@pytest.mark.parametrize("kind", sorted(CREDENTIALED))
async def test_a_redirect_to_another_origin_loses_the_credentials(make, upstream, kind):
    # 127.0.0.1:port is the upstream's origin; localhost:port is another one (same server).
    port = upstream.port
    channel = plain(upstream, **CREDENTIALED[kind])
    upstream.override(
        f"/t/{TOKEN}/noarch/pkg.conda",
        status=302,
        headers={"location": f"http://localhost:{port}/cdn/pkg.conda"},
    )
    upstream.override(
        "/cdn/pkg.conda", status=307, headers={"location": f"{upstream.url}/final/pkg.conda"}
    )
    upstream.override("/final/pkg.conda", b"package bytes")
    client = make(Dns({"localhost": ["127.0.0.1"]}))
    for _ in range(2):  # the second time over pooled connections
        got = await pieces(client, channel, UpstreamClient.url_for(channel, "noarch/pkg.conda"))
        assert b"".join(got) == b"package bytes"
    first, foreign, back = upstream.seen()[-3:]
    assert carried(first), "the upstream got them"
    assert foreign["path"] == "/cdn/pkg.conda" and not carried(foreign)
    assert foreign["headers"]["host"] == f"localhost:{port}"
    assert back["path"] == "/final/pkg.conda" and carried(back), "its own origin again"


@pytest.mark.parametrize("length", [4000, 12000])
async def test_a_long_presigned_redirect_is_followed(make, upstream, length):
    # S3/STS presigned URLs run to kilobytes; httpx (h11) accepted a 16 KiB head.
    signed = f"/signed/pkg.conda?X-Amz-Security-Token={'A' * length}"
    upstream.override("/noarch/pkg.conda", status=302, headers={"location": signed})
    upstream.override("/signed/pkg.conda", b"signed bytes")
    got = await pieces(make(), plain(upstream), f"{upstream.url}/noarch/pkg.conda")
    assert b"".join(got) == b"signed bytes"


# Pinning: the connection goes to the addresses that were checked (no second lookup, so DNS
# rebinding cannot swap them).


async def test_the_connection_goes_to_the_checked_address(make, upstream):
    # pinned.test does not exist in DNS: only the checked address makes this work
    client = make(Dns({"pinned.test": ["127.0.0.1"]}))
    got = await pieces(
        client, plain(upstream), f"http://pinned.test:{upstream.port}/noarch/repodata.json"
    )
    assert b'"packages"' in b"".join(got)
    assert upstream.seen()[-1]["headers"]["host"] == f"pinned.test:{upstream.port}"


async def test_a_rebound_name_cannot_reach_an_address_that_was_not_checked(make, upstream):
    port = upstream.port
    upstream.reset()
    # The check saw 127.0.0.9 (nothing listens there); the system would say 127.0.0.1.
    client = make(Dns({"localhost": ["127.0.0.9"], "pinned.test": ["127.0.0.1"]}))
    good = pieces(client, plain(upstream), f"http://pinned.test:{port}/noarch/repodata.json")
    bad = pieces(client, plain(upstream), f"http://localhost:{port}/noarch/repodata.json")
    results = await asyncio.gather(good, bad, return_exceptions=True)  # pins never mix
    assert isinstance(results[1], UpstreamError) and "cannot connect" in results[1].message
    assert not isinstance(results[0], BaseException)
    assert [r["headers"]["host"] for r in upstream.seen()] == [f"pinned.test:{port}"]


async def test_a_name_that_does_not_resolve_is_not_connected(make, upstream):
    upstream.reset()
    with pytest.raises(UpstreamError, match="cannot connect"):
        await pieces(make(), plain(upstream), f"http://nowhere.test:{upstream.port}/noarch/x")
    assert upstream.seen() == []


# Which fetcher production uses


@pytest.mark.parametrize("variable", [None, *PROXY_VARIABLES])
async def test_production_fetches_with_aiohttp_unless_an_egress_proxy_is_set(
    no_env_proxy, monkeypatch, variable
):
    if variable is not None:
        monkeypatch.setenv(variable, "http://egress.example:3128")
    fetcher = production_fetcher(SETTINGS)
    try:
        assert isinstance(fetcher, HttpxFetcher if variable else AiohttpFetcher)
    finally:
        await fetcher.aclose()
