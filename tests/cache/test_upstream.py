"""The upstream client against respx: statuses, redirects, timeouts, broken bodies, secrets,
and the origin rules (who gets credentials, where metadata may send the proxy)."""

from __future__ import annotations

import httpx
import pytest
import respx

from condaproxy.cache.upstream import OriginRefused, UpstreamClient, channel_base, system_resolve
from condaproxy.rules.errors import UpstreamError, UpstreamNotFound, UpstreamTimeout
from condaproxy.rules.redact import Redactor
from condaproxy.settings import ChannelSettings, Secret, UpstreamSettings

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


# Origins: credentials only to the upstream's own origin; metadata cannot steer the proxy.

PUBLIC_UP = "93.184.216.34"
BEARER = "bearer-secret-98765"


class Dns:
    """An injected resolver: names from a table, anything else unresolvable (or, with
    `system`, resolved as the connection would). Counts the questions."""

    def __init__(self, table: dict[str, list[str]], system: bool = False) -> None:
        self.table = {"up.example": [PUBLIC_UP], "cdn.example": ["151.101.1.1"], **table}
        self.system = system
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host in self.table:
            return self.table[host]
        return await system_resolve(host, port) if self.system else []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guarded(dns: Dns, clock: Clock | None = None) -> UpstreamClient:
    settings = UpstreamSettings(connect_timeout=1, read_timeout=1)
    return UpstreamClient(settings, Redactor([TOKEN, BEARER]), resolver=dns, clock=clock or Clock())


CREDENTIALED = {
    "token+bearer": ChannelSettings(
        "org",
        "https://up.example/org",
        upstream_token=Secret(TOKEN),
        upstream_bearer=Secret(BEARER),
    ),
    "token+basic": ChannelSettings(
        "org",
        "https://up.example/org",
        upstream_token=Secret(TOKEN),
        upstream_username="me",
        upstream_password=Secret(BEARER),
    ),
    "url-userinfo": ChannelSettings("org", f"https://me:{BEARER}@up.example/org"),
}


def hosts(router: respx.Router) -> list[str]:
    return [call.request.url.host for call in router.calls]


async def fetch(client: UpstreamClient, channel: ChannelSettings, url: str) -> bytes:
    async with client.open(channel, url) as response:
        return b"".join([c async for c in response.iter_bytes()])


@pytest.mark.parametrize(
    "inner",
    [
        ["169.254.169.254"],
        ["::ffff:169.254.169.254"],
        ["fe80::1"],
        ["10.0.0.7"],
        ["100.64.0.9"],
        ["fd00::1"],
        ["127.0.0.1"],
        ["::1"],
        ["0.0.0.0"],
        ["151.101.1.1", "10.0.0.7"],
    ],
    ids=str,
)
async def test_metadata_cannot_send_a_public_upstream_to_an_inner_address(router, inner):
    route = router.get("https://inner.example/pkg.conda").respond(200, content=b"secret")
    client = guarded(Dns({"inner.example": inner}))
    with pytest.raises(OriginRefused) as info:
        await fetch(client, CREDENTIALED["token+bearer"], "https://inner.example/pkg.conda")
    assert info.value.status == 502
    assert "refused to fetch from https://inner.example:443" in info.value.message
    assert not route.called


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://inner.example/latest/meta-data/",
        "http://0.0.0.0:8080/",
        "http://10.1.2.3/",
        "http://[fd00::1]/",
    ],
)
async def test_a_redirect_hop_to_an_inner_address_is_refused(router, location):
    router.get(f"https://up.example/t/{TOKEN}/org/pkg.conda").respond(
        302, headers={"location": location}
    )
    client = guarded(Dns({"inner.example": ["169.254.169.254"]}))
    url = UpstreamClient.url_for(CREDENTIALED["token+bearer"], "pkg.conda")
    with pytest.raises(OriginRefused, match="refused to fetch from http://"):
        await fetch(client, CREDENTIALED["token+bearer"], url)
    assert hosts(router) == ["up.example"], "the refused hop was never attempted"


@pytest.mark.parametrize(
    # (httpx itself rejects the octal `0177.0.0.1` as a URL, before any of this)
    "url",
    ["http://2130706433/x", "http://0x7f.1/x", "http://0x7f000001/x", "http://127.1/x"],
)
async def test_numeric_spellings_of_loopback_are_refused_once_resolved(router, url):
    client = guarded(Dns({}, system=True))
    with pytest.raises(OriginRefused, match=r"127\.0\.0\.1 is loopback, the upstream is public"):
        await fetch(client, CREDENTIALED["token+bearer"], url)
    assert not router.calls


async def test_allowed_origins_lets_the_operator_allow_an_inner_origin(router):
    router.get("https://up.example/pkg.conda").respond(
        302, headers={"location": "http://inner.example:8080/pkg.conda"}
    )
    inner = router.get("http://inner.example:8080/pkg.conda").respond(200, content=b"pkg")
    channel = ChannelSettings(
        "org",
        "https://up.example",
        upstream_bearer=Secret(BEARER),
        allowed_origins=("http://INNER.example:8080",),
    )
    client = guarded(Dns({"inner.example": ["10.0.0.7"]}))
    assert await fetch(client, channel, "https://up.example/pkg.conda") == b"pkg"
    assert "authorization" not in inner.calls.last.request.headers, "allowed is not trusted"


@pytest.mark.parametrize("how", ["metadata-url", "redirect", "redirect-with-userinfo"])
@pytest.mark.parametrize("kind", sorted(CREDENTIALED))
async def test_credentials_never_reach_a_foreign_origin(router, kind, how):
    channel = CREDENTIALED[kind]
    cdn = router.get("https://cdn.example/files/pkg.conda").respond(200, content=b"pkg")
    own = UpstreamClient.url_for(channel, "pkg.conda")
    if how == "metadata-url":
        url = "https://cdn.example/files/pkg.conda"
    else:
        userinfo = "me:guess@" if how == "redirect-with-userinfo" else ""
        location = f"https://{userinfo}cdn.example/files/pkg.conda"
        router.get(own.replace(f"me:{BEARER}@", "")).respond(302, headers={"location": location})
        url = own
    assert await fetch(guarded(Dns({})), channel, url) == b"pkg"
    sent = cdn.calls.last.request
    assert "authorization" not in sent.headers
    assert "/t/" not in sent.url.raw_path.decode() and TOKEN not in str(sent.url)
    if how != "metadata-url":
        assert "authorization" in router.calls[0].request.headers, "the upstream got them"


async def test_a_redirect_back_to_the_upstreams_origin_carries_credentials(router):
    channel = CREDENTIALED["token+bearer"]
    own = UpstreamClient.url_for(channel, "pkg.conda")
    router.get(own).respond(302, headers={"location": "https://cdn.example/bounce"})
    router.get("https://cdn.example/bounce").respond(
        307, headers={"location": "https://UP.example:443/final/pkg.conda"}
    )
    final = router.get("https://up.example/final/pkg.conda").respond(200, content=b"pkg")
    assert await fetch(guarded(Dns({})), channel, own) == b"pkg"
    assert final.calls.last.request.headers["authorization"] == f"Bearer {BEARER}"
    assert "authorization" not in router.calls[1].request.headers


@pytest.mark.parametrize(
    "url",
    [
        "http://up.example/pkg.conda",  # a downgrade to plain http
        "https://up.example:8443/pkg.conda",
        "https://files.up.example/pkg.conda",
    ],
)
async def test_credentials_need_the_exact_origin(router, url):
    route = router.get(url).respond(200, content=b"pkg")
    dns = Dns({"files.up.example": [PUBLIC_UP]})
    assert await fetch(guarded(dns), CREDENTIALED["token+basic"], url) == b"pkg"
    assert "authorization" not in route.calls.last.request.headers


async def test_a_foreign_url_holding_the_token_is_refused(router):
    with pytest.raises(OriginRefused) as info:
        await fetch(guarded(Dns({})), CHANNEL, f"https://cdn.example/t/{TOKEN}/org/x")
    assert TOKEN not in info.value.message
    assert not router.calls


@pytest.mark.parametrize("location", ["file:///etc/passwd", "gopher://up.example/", "ftp://x/"])
async def test_a_redirect_to_another_scheme_is_refused(router, location):
    router.get("https://up.example/pkg.conda").respond(302, headers={"location": location})
    with pytest.raises(OriginRefused, match="is not http or https"):
        await fetch(guarded(Dns({})), CHANNEL, "https://up.example/pkg.conda")


async def test_a_redirect_loop_stops_after_ten_hops(router):
    route = router.get("https://up.example/loop").respond(
        302, headers={"location": "https://up.example/loop"}
    )
    with pytest.raises(UpstreamError, match="more than 10 redirects"):
        await fetch(guarded(Dns({})), CHANNEL, "https://up.example/loop")
    assert route.call_count == 11


async def test_resolutions_are_reused_for_a_minute(router):
    router.get("https://cdn.example/a").respond(200, content=b"a")
    dns, clock = Dns({}), Clock()
    client = guarded(dns, clock)
    for _ in range(3):
        await fetch(client, CHANNEL, "https://cdn.example/a")
    assert sorted(dns.asked) == ["cdn.example", "up.example"]
    clock.now += 61
    await fetch(client, CHANNEL, "https://cdn.example/a")
    assert len(dns.asked) == 4


async def test_the_system_resolver_reads_numeric_spellings_as_a_connection_would():
    for spelling in ("2130706433", "0x7f.1", "0177.0.0.1", "127.1"):
        assert await system_resolve(spelling, 80) == ["127.0.0.1"]
    assert await system_resolve("no-such-host.invalid", 80) == []
