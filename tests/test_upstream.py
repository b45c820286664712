"""The upstream client against respx: statuses, redirects, timeouts, broken bodies, secrets."""

from __future__ import annotations

import httpx
import pytest
import respx

from condaproxy.errors import UpstreamError, UpstreamNotFound, UpstreamTimeout
from condaproxy.redact import Redactor
from condaproxy.settings import ChannelSettings, Secret, UpstreamSettings
from condaproxy.upstream import UpstreamClient, channel_base

TOKEN = "tk-very-secret-1234"
CHANNEL = ChannelSettings("org", "https://up.example/org", upstream_token=Secret(TOKEN))


@pytest.fixture
def router():
    # respx.mock patches below httpx, so the client's real streaming code runs.
    with respx.mock(assert_all_called=False) as mocked:
        yield mocked


def client(router: respx.Router) -> UpstreamClient:
    return UpstreamClient(UpstreamSettings(connect_timeout=1, read_timeout=1), Redactor([TOKEN]))


def test_token_goes_into_the_path_anaconda_style():
    assert channel_base(CHANNEL) == f"https://up.example/t/{TOKEN}/org"


async def test_304_is_passed_to_the_caller(router):
    router.get("https://up.example/a").respond(304, headers={"etag": '"e1"'})
    async with client(router).open(
        CHANNEL, "https://up.example/a", headers={"if-none-match": '"e1"'}
    ) as r:
        assert r.status == 304
        assert r.headers["etag"] == '"e1"'
    assert router.calls.last.request.headers["if-none-match"] == '"e1"'


async def test_redirects_are_followed(router):
    router.get("https://up.example/pkg.conda").respond(
        302, headers={"location": "https://s3.example/signed?x=1"}
    )
    router.get("https://s3.example/signed?x=1").respond(200, content=b"bytes")
    async with client(router).open(CHANNEL, "https://up.example/pkg.conda") as r:
        body = b"".join([c async for c in r.iter_bytes()])
    assert body == b"bytes"


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, UpstreamNotFound), (410, UpstreamNotFound), (500, UpstreamError), (403, UpstreamError)],
)
async def test_statuses_become_domain_errors(router, status, error):
    router.get(f"https://up.example/t/{TOKEN}/org/x").respond(status)
    url = UpstreamClient.url_for(CHANNEL, "x")
    with pytest.raises(error) as info:
        async with client(router).open(CHANNEL, url):
            pass
    assert TOKEN not in info.value.message
    assert "/t/***/org/x" in info.value.message


async def test_connect_timeout_is_504_and_refused_is_502(router):
    router.get("https://up.example/slow").mock(side_effect=httpx.ConnectTimeout("slow"))
    router.get("https://up.example/down").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(UpstreamTimeout) as info:
        async with client(router).open(CHANNEL, "https://up.example/slow"):
            pass
    assert info.value.status == 504
    with pytest.raises(UpstreamError) as info2:
        async with client(router).open(CHANNEL, "https://up.example/down"):
            pass
    assert info2.value.status == 502 and "https://up.example/down" in info2.value.message


async def test_truncated_body_raises_upstream_error(router):
    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield b"half"
            raise httpx.RemoteProtocolError("peer closed connection")

    router.get("https://up.example/t").respond(
        200, headers={"content-length": "8"}, stream=Broken()
    )
    with pytest.raises(UpstreamError, match="body broken off"):
        async with client(router).open(CHANNEL, "https://up.example/t") as r:
            async for _ in r.iter_bytes():
                pass


async def test_bearer_and_basic_credentials_are_sent(router):
    route = router.get("https://up.example/b").respond(200)
    bearer = ChannelSettings("b", "https://up.example", upstream_bearer=Secret("bt"))
    async with client(router).open(bearer, "https://up.example/b"):
        pass
    assert route.calls.last.request.headers["authorization"] == "Bearer bt"
    basic = ChannelSettings(
        "c", "https://up.example", upstream_username="u", upstream_password=Secret("p")
    )
    async with client(router).open(basic, "https://up.example/b"):
        pass
    assert route.calls.last.request.headers["authorization"] == "Basic dTpw"
