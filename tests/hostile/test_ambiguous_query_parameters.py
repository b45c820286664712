"""An admin or uploader whose query string names a parameter twice with different values,
against a real proxy. The API took the last one: `?metadata_only=true&metadata_only=false`
purged every cached file of the channel, `?force=false&force=true` replaced an upload, and
`?sha256=<one>&sha256=<another>` checked the body against whichever came last. A request
that changes state must say what it does once: such a request is a 400 naming the
parameter, and nothing is purged or replaced. The same value twice is no ambiguity."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

ADMIN = "admin-token-11223"
WRITER = "writer-token-44556"
CACHED = "linux-64/libzlib-1.3-h0.conda"
TOOL = Pkg("mytool", "1.0", "h0", "linux-64")
REBUILT = Pkg("mytool", "1.0", "h0", "linux-64", payload_size=4096)  # same name, other bytes


@pytest.fixture(scope="module")
def proxy(channel_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    base = tmp_path_factory.mktemp("ambiguous-query")
    upstream = Upstream(channel_dir).start()
    config = write_config(
        base / "proxy.toml",
        base / "cache",
        {"pub": {"upstream": upstream.url}, "team": {}},
        tokens={
            "ops": {"token": ADMIN, "roles": {"*": "admin"}},
            "ci": {"token": WRITER, "roles": {"team": "write"}},
        },
    )
    started = Proxy(config).start()
    yield started
    started.stop()
    upstream.stop()


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    built = []
    for pkg in (TOOL, REBUILT):
        work = tmp_path_factory.mktemp("ambiguous-package")
        built.append(build_package(pkg, work / "src", work / "out").read_bytes())
    assert built[0] != built[1]
    return built[0], built[1]


def cached(proxy: Proxy) -> bool:
    got = httpx.get(f"{proxy.url}/pub/{CACHED}")
    assert got.status_code == 200
    return got.headers["x-cache"] == "HIT"


@pytest.mark.parametrize(
    "query",
    [
        "metadata_only=true&metadata_only=false",
        "metadata_only=1&metadata_only=",
        "package=libzlib&package=datatool",
        "package=libzlib&metadata_only=true&package=libcore",
    ],
)
def test_a_purge_naming_a_parameter_twice_differently_purges_nothing(proxy, query):
    httpx.get(f"{proxy.url}/pub/{CACHED}").raise_for_status()
    assert cached(proxy)
    answer = httpx.delete(f"{proxy.url}/api/cache/pub?{query}", headers={"x-api-key": ADMIN})
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert "more than once" in answer.json()["error"]
    assert cached(proxy)


def upload(proxy: Proxy, body: bytes, query: str) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/api/channels/team/upload/{TOOL.filename}?{query}",
        content=body,
        headers={"x-api-key": WRITER},
    )


def listed_sha256(proxy: Proxy) -> list[str]:
    got = httpx.get(f"{proxy.url}/api/channels/team/packages", headers={"x-api-key": WRITER})
    return [p["sha256"] for p in got.json()["packages"]]


def test_an_upload_naming_force_or_sha256_twice_differently_changes_nothing(proxy, packages):
    package, rebuilt = packages
    digest = hashlib.sha256(package).hexdigest()
    other = hashlib.sha256(rebuilt).hexdigest()
    first = upload(proxy, package, f"sha256={digest}&sha256={digest}")  # the same twice
    assert first.status_code == 201, first.text
    for query in (
        "force=false&force=true",
        f"force=true&sha256={digest}&sha256={other}",
        f"force=true&force=true&sha256={other}&sha256=" + "0" * 64,
    ):
        answer = upload(proxy, rebuilt, query)
        assert answer.status_code == 400, (query, answer.text)
        assert "more than once" in answer.json()["error"]
    assert listed_sha256(proxy) == [digest]
    served = httpx.get(f"{proxy.url}/team/linux-64/{TOOL.filename}")
    assert served.content == package


def test_the_rebuilt_package_replaces_the_upload_when_asked_once(proxy, packages):
    _, rebuilt = packages
    answer = upload(proxy, rebuilt, f"force=true&sha256={hashlib.sha256(rebuilt).hexdigest()}")
    assert answer.status_code == 201, answer.text
    assert listed_sha256(proxy) == [hashlib.sha256(rebuilt).hexdigest()]
