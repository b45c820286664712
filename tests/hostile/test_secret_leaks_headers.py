"""Credentials cross the proxy in neither direction by header. A client's own credentials
(`Authorization`, `Cookie`, `X-API-Key`, `Proxy-Authorization`) are never forwarded upstream;
an upstream's `Set-Cookie`, `WWW-Authenticate` and `Location` never reach a client, on a
file it serves or on a refusal it turns into a 502; and the channel's own credentials go
only to the upstream's exact origin when a redirect names the same server under another
name or port. (No leak was found here: these tests keep it so.)

Real processes: two test upstreams on 127.0.0.1 (the channel's and another port), the proxy
in front, configured with a bearer token."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Proxy, Upstream

pytestmark = pytest.mark.integration

BEARER = "ChannelBearerNeverElsewhere31"
CLIENT = "ClientCredentialNeverUpstream42"
PKG = "linux-64/libzlib-1.3-h0.conda"
CLIENT_HEADERS = {
    "authorization": f"Bearer {CLIENT}",
    "cookie": f"session={CLIENT}",
    "x-api-key": CLIENT,
    "proxy-authorization": f"Basic {CLIENT}",
}
UPSTREAM_HEADERS = {
    "set-cookie": "upstream-session=UpstreamCookieValue",
    "www-authenticate": 'Basic realm="UpstreamRealmValue"',
    "location": "http://UpstreamLocationValue.example/",
    "authentication-info": "UpstreamAuthInfoValue",
}


@pytest.fixture
def hosts(tmp_path: Path, channel_dir: Path):  # type: ignore[no-untyped-def]
    shutil.copytree(channel_dir, tmp_path / "home" / "ch")
    shutil.copytree(channel_dir, tmp_path / "other" / "ch")
    home, other = Upstream(tmp_path / "home").start(), Upstream(tmp_path / "other").start()
    yield home, other
    home.stop()
    other.stop()


@pytest.fixture
def proxy(hosts, start_proxy) -> Proxy:  # type: ignore[no-untyped-def]
    home, _ = hosts
    return start_proxy({"ch": {"upstream": f"{home.url}/ch", "upstream_bearer": BEARER}}, ttl=0)


@pytest.mark.parametrize("header", list(CLIENT_HEADERS))
@pytest.mark.parametrize(
    "path", [PKG, "linux-64/repodata.json", "linux-64/unlisted-1.0-h0.conda", "noarch/"]
)
def test_a_client_credential_is_never_forwarded(hosts, proxy, path, header) -> None:  # type: ignore[no-untyped-def]
    home, _ = hosts
    home.override("/ch/linux-64/unlisted-1.0-h0.conda", body=b"x" * 64)
    httpx.get(f"{proxy.url}/ch/{path}", headers={header: CLIENT_HEADERS[header]}, timeout=30)
    seen = home.seen()
    assert seen, "the upstream was asked"
    for request in seen:
        assert CLIENT not in str(request["headers"]), request


@pytest.mark.parametrize("status", [200, 401, 403, 407])
def test_upstream_auth_headers_never_reach_the_client(hosts, proxy, status) -> None:  # type: ignore[no-untyped-def]
    home, _ = hosts
    home.override("/ch/linux-64/unlisted-1.0-h0.conda", b"x" * 64, status, headers=UPSTREAM_HEADERS)
    response = httpx.get(f"{proxy.url}/ch/linux-64/unlisted-1.0-h0.conda", timeout=30)
    assert response.status_code == (200 if status == 200 else 502)
    shown = str(dict(response.headers)) + response.text
    for value in UPSTREAM_HEADERS.values():
        assert value.split("=")[-1].strip('"/') not in shown, shown


@pytest.mark.parametrize("target", ["another-port", "another-host-name", "userinfo-elsewhere"])
def test_a_redirect_elsewhere_carries_no_channel_credential(hosts, proxy, target) -> None:  # type: ignore[no-untyped-def]
    home, other = hosts
    where = {
        "another-port": f"{other.url}/ch/{PKG}",
        "another-host-name": f"http://localhost:{home.port}/ch/{PKG}",
        "userinfo-elsewhere": f"http://me:pw@localhost:{other.port}/ch/{PKG}",
    }[target]
    home.override("/ch/linux-64/moved-1.0-h0.conda", status=302, headers={"location": where})
    response = httpx.get(f"{proxy.url}/ch/linux-64/moved-1.0-h0.conda", timeout=30)
    assert response.status_code == 200
    followed = [r for r in home.seen() + other.seen() if r["path"] == f"/ch/{PKG}"]
    assert followed, "the redirect was followed"
    for request in followed:
        assert "authorization" not in request["headers"], request
    assert all(BEARER not in str(r["headers"]) for r in other.seen())
