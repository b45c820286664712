"""Hostile upstream metadata and redirects: the channel's credentials (path token, bearer,
basic) reach only the configured upstream's origin, and metadata cannot steer the proxy at
addresses of another class than the upstream's (cloud metadata, pod IPs, 0.0.0.0).

Real processes: two test upstreams on 127.0.0.1 (the channel's own and a "foreign" one),
the proxy in front. The address-class rule for public upstreams is exercised in-process with
an injected resolver, since tests only have loopback."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import msgspec
import pytest
import respx
from starlette.testclient import TestClient

from condaproxy.cache.builds import zstd_decompress
from condaproxy.settings import CacheSettings, ChannelSettings, Settings, UpstreamSettings
from condaproxy.web.app import create_app
from tests.support.channel import split_channel
from tests.support.clients import rattler_install
from tests.support.processes import Upstream

TOKEN = "tk-origin-secret-0001"
BEARER = "bearer-origin-secret-0002"
PASSWORD = "basic-origin-secret-0003"
PKG = "linux-64/datatool-1.0-h2.conda"
CREDENTIALS = {
    "bearer": {"upstream_token": TOKEN, "upstream_bearer": BEARER},
    "basic": {"upstream_token": TOKEN, "upstream_username": "me", "upstream_password": PASSWORD},
}


class Hosts:
    """The channel's upstream (`home`, serving below /t/<token>/) and a foreign host."""

    def __init__(self, tmp_path: Path) -> None:
        self.home = Upstream(tmp_path / "home")
        self.foreign = Upstream(tmp_path / "foreign")
        self.channel = self.home.directory / "t" / TOKEN

    def start(self) -> Hosts:
        self.home.start()
        self.foreign.start()
        return self

    def stop(self) -> None:
        self.home.stop()
        self.foreign.stop()

    def config(self, kind: str = "bearer", **extra: object) -> dict[str, object]:
        return {"upstream": self.home.url, **CREDENTIALS[kind], **extra}


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    made = Hosts(tmp_path)
    yield made
    made.stop()


def split_to(hosts: Hosts, channel_dir: Path, foreign_url: str) -> Hosts:
    """The channel's metadata names `foreign_url` in CEP-15 base_url and CEP-16
    base_url/shards_base_url; the files live on the foreign host."""
    split_channel(channel_dir, hosts.channel, hosts.foreign.directory, foreign_url)
    return hosts.start()


def plain(hosts: Hosts, channel_dir: Path) -> Hosts:
    shutil.copytree(channel_dir, hosts.channel)
    shutil.copytree(channel_dir, hosts.foreign.directory)
    return hosts.start()


def leaks(seen: list[dict]) -> list[dict]:
    """Requests that carried a credential."""
    return [
        r
        for r in seen
        if "authorization" in r["headers"] or "/t/" in str(r["raw_path"]) or TOKEN in str(r)
    ]


def shard_path(proxy_url: str) -> str:
    raw = httpx.get(f"{proxy_url}/ch/linux-64/repodata_shards.msgpack.zst").content
    index = msgpack.unpackb(zstd_decompress(raw))
    return f"linux-64/shards/{index['shards']['datatool'].hex()}.msgpack.zst"


# Credentials stay with the upstream's origin.


@pytest.mark.e2e
@pytest.mark.parametrize("sharded", [True, False], ids=["shards", "repodata-json"])
@pytest.mark.parametrize("kind", sorted(CREDENTIALS))
def test_credentials_never_reach_the_host_metadata_points_at(
    hosts, channel_dir, start_proxy, tmp_path, kind, sharded
):
    split_to(hosts, channel_dir, hosts.foreign.url)
    proxy = start_proxy({"ch": hosts.config(kind)})
    result = rattler_install(f"{proxy.url}/ch", tmp_path / "client", sharded, "datatool")
    assert result["ok"], result.get("trace")
    fetched = hosts.foreign.seen()
    assert any(r["path"].endswith(".conda") for r in fetched), "packages came from the foreign host"
    assert any("/shards/" in r["path"] for r in fetched) is sharded
    assert leaks(fetched) == []
    assert all(r in leaks(hosts.home.seen()) for r in hosts.home.seen()), "the upstream got them"


@pytest.mark.integration
@pytest.mark.parametrize("kind", sorted(CREDENTIALS))
def test_downloads_from_the_metadata_named_host_are_anonymous(
    hosts, channel_dir, start_proxy, kind
):
    split_to(hosts, channel_dir, hosts.foreign.url)
    proxy = start_proxy({"ch": hosts.config(kind)})
    assert httpx.get(f"{proxy.url}/ch/linux-64/repodata.json").status_code == 200
    for path in (PKG, shard_path(proxy.url)):
        got = httpx.get(f"{proxy.url}/ch/{path}")
        assert got.status_code == 200, got.text
        assert got.content == (channel_dir / path).read_bytes()
    assert len(hosts.foreign.seen()) == 2
    assert leaks(hosts.foreign.seen()) == []


@pytest.mark.integration
@pytest.mark.parametrize("kind", sorted(CREDENTIALS))
def test_a_package_redirect_to_another_host_loses_the_credentials(
    hosts, channel_dir, start_proxy, kind
):
    plain(hosts, channel_dir)
    # anaconda.org style: the package answers 302 to a URL on another host
    hosts.home.override(
        f"/t/{TOKEN}/{PKG}", status=302, headers={"location": f"{hosts.foreign.url}/{PKG}"}
    )
    proxy = start_proxy({"ch": hosts.config(kind)})
    got = httpx.get(f"{proxy.url}/ch/{PKG}")
    assert got.status_code == 200 and got.content == (channel_dir / PKG).read_bytes()
    assert [r["path"] for r in hosts.foreign.seen()] == [f"/{PKG}"]
    assert leaks(hosts.foreign.seen()) == []


@pytest.mark.integration
def test_a_redirect_back_to_the_upstream_carries_the_credentials_again(
    hosts, channel_dir, start_proxy
):
    plain(hosts, channel_dir)
    body = (channel_dir / PKG).read_bytes()
    hosts.home.override(
        f"/t/{TOKEN}/{PKG}", status=302, headers={"location": f"{hosts.foreign.url}/bounce"}
    )
    hosts.foreign.override("/bounce", status=302, headers={"location": f"{hosts.home.url}/back"})
    hosts.home.override("/back", body)
    proxy = start_proxy({"ch": hosts.config("bearer")})
    got = httpx.get(f"{proxy.url}/ch/{PKG}")
    assert got.status_code == 200 and got.content == body
    assert leaks(hosts.foreign.seen()) == []
    back = [r for r in hosts.home.seen() if r["path"] == "/back"]
    assert back[0]["headers"]["authorization"] == f"Bearer {BEARER}"


# Metadata cannot steer the proxy at another class of address. 0.0.0.0 reaches the local host
# on Linux: the one forbidden address a loopback-only test can really connect to.


def refused(response: httpx.Response, origin: str) -> None:
    assert response.status_code == 502
    body = response.json()
    assert body["status"] == 502
    assert f"refused to fetch from {origin}" in body["error"]
    assert TOKEN not in response.text and BEARER not in response.text


@pytest.mark.integration
@pytest.mark.parametrize("via", ["base_url", "redirect"])
def test_metadata_cannot_send_the_proxy_to_0_0_0_0(hosts, channel_dir, start_proxy, via):
    sneaky = f"http://0.0.0.0:{hosts.foreign.port}"
    if via == "base_url":
        split_to(hosts, channel_dir, sneaky)
    else:
        plain(hosts, channel_dir)
        hosts.home.override(
            f"/t/{TOKEN}/{PKG}", status=302, headers={"location": f"{sneaky}/{PKG}"}
        )
    proxy = start_proxy({"ch": hosts.config("bearer")})
    assert httpx.get(f"{proxy.url}/ch/linux-64/repodata.json").status_code == 200
    refused(httpx.get(f"{proxy.url}/ch/{PKG}"), sneaky)
    assert hosts.foreign.seen() == [], "the refused fetch was never attempted"
    events = [e for e in proxy.events() if e.get("event") == "upstream origin refused"]
    assert len(events) == 1 and events[0]["level"] == "warning"
    assert events[0]["origin"] == sneaky and "never fetches" in events[0]["reason"]


@pytest.mark.integration
def test_allowed_origins_lets_the_operator_allow_it(hosts, channel_dir, start_proxy):
    sneaky = f"http://0.0.0.0:{hosts.foreign.port}"
    split_to(hosts, channel_dir, sneaky)
    proxy = start_proxy({"ch": hosts.config("bearer", allowed_origins=[sneaky])})
    assert httpx.get(f"{proxy.url}/ch/linux-64/repodata.json").status_code == 200
    got = httpx.get(f"{proxy.url}/ch/{PKG}")
    assert got.status_code == 200 and got.content == (channel_dir / PKG).read_bytes()
    assert leaks(hosts.foreign.seen()) == [], "allowed, but still not credentialed"


# A public upstream, in-process with an injected resolver: its metadata names hosts that
# resolve to inner addresses.

UP = "https://up.example/cf"
PKG_BYTES = b"conda package " * 64
INNER = {
    "metadata.example": ["169.254.169.254"],
    "mapped.example": ["::ffff:169.254.169.254"],
    "pod.example": ["10.12.0.7"],
    "cgnat.example": ["100.64.0.3"],
    "ula.example": ["fd00::7"],
    "mixed.example": ["151.101.1.1", "10.0.0.1"],
}


class Dns:
    async def __call__(self, host: str, port: int) -> list[str]:
        return {"up.example": ["93.184.216.34"], **INNER}.get(host, [])


def app_client(tmp_path: Path, allowed: tuple[str, ...] = ()) -> TestClient:
    settings = Settings(
        cache=CacheSettings(path=tmp_path / "cache"),
        upstream=UpstreamSettings(connect_timeout=1, read_timeout=1),
        channels={"cf": ChannelSettings("cf", UP, allowed_origins=allowed)},
    )
    return TestClient(create_app(settings, resolver=Dns()))


def repodata(base_url: str | None) -> bytes:
    info: dict[str, str] = {"subdir": "linux-64"}
    if base_url:
        info["base_url"] = base_url
    record = {
        "name": "pkg",
        "version": "1.0",
        "build": "0",
        "build_number": 0,
        "sha256": hashlib.sha256(PKG_BYTES).hexdigest(),
        "size": len(PKG_BYTES),
    }
    return msgspec.json.encode(
        {"info": info, "packages": {}, "packages.conda": {"pkg-1.0-0.conda": record}}
        | {"repodata_version": 2}
    )


@pytest.mark.parametrize("host", sorted(INNER))
@pytest.mark.parametrize("via", ["base_url", "redirect"])
def test_a_public_upstream_cannot_send_the_proxy_inward(tmp_path, host, via):
    inner = f"http://{host}/latest"
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{UP}/linux-64/repodata.json.zst").respond(404)
        router.get(f"{UP}/linux-64/repodata.json").respond(
            200, content=repodata(inner if via == "base_url" else None)
        )
        router.get(f"{UP}/linux-64/pkg-1.0-0.conda").respond(
            302, headers={"location": f"{inner}/pkg-1.0-0.conda"}
        )
        target = router.get(f"{inner}/pkg-1.0-0.conda").respond(200, content=PKG_BYTES)
        with app_client(tmp_path) as client:
            assert client.get("/cf/linux-64/repodata.json").status_code == 200
            refused(client.get("/cf/linux-64/pkg-1.0-0.conda"), f"http://{host}:80")
        assert not target.called
        with app_client(tmp_path / "allowed", (f"http://{host}",)) as client:
            assert client.get("/cf/linux-64/repodata.json").status_code == 200
            assert client.get("/cf/linux-64/pkg-1.0-0.conda").content == PKG_BYTES
        assert target.call_count == 1
