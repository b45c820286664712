"""An admin's purge whose query string the proxy does not read as written, against a real
proxy. Unknown parameters were ignored and a bare `metadata_only` read as false, so
`?metadata_only` (presence meaning "yes", as many APIs take it), `?metadata-only=true` (the
CLI's `--metadata-only` spelling) or `?packages=libzlib` purged every cached file of the
channel instead of its metadata or one package. A purge does only what its request says:
anything else is a 400 naming the parameter, and nothing is purged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hostile import admin_proxy
from tests.support.processes import Proxy

pytestmark = pytest.mark.integration

ADMIN = "admin-token-77120"
CACHED = "linux-64/libzlib-1.3-h0.conda"


@pytest.fixture(scope="module")
def proxy(channel_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    with admin_proxy(channel_dir, tmp_path_factory.mktemp("purge-queries"), ADMIN) as started:
        yield started


def cache_it(proxy: Proxy) -> None:
    httpx.get(f"{proxy.url}/pub/{CACHED}").raise_for_status()
    assert httpx.head(f"{proxy.url}/pub/{CACHED}").headers["x-cache"] == "HIT"


def still_cached(proxy: Proxy) -> bool:
    return httpx.head(f"{proxy.url}/pub/{CACHED}").headers["x-cache"] == "HIT"


@pytest.mark.parametrize("scope", ["", "/pub", "/pub/linux-64", f"/pub/{CACHED}"])
@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("metadata_only", "metadata_only"),
        ("metadata_only=", "metadata_only"),
        ("metadata-only=true", "metadata-only"),
        ("metadataOnly=true", "metadataOnly"),
        ("packages=libzlib", "packages"),
        ("Package=libzlib", "Package"),
        ("package=libzlib&dry_run=1", "dry_run"),
    ],
)
def test_a_purge_with_a_query_it_does_not_read_purges_nothing(proxy, scope, query, named):
    cache_it(proxy)
    answer = httpx.delete(f"{proxy.url}/api/cache{scope}?{query}", headers={"x-api-key": ADMIN})
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert named in answer.json()["error"]
    assert answer.json()["parameter"] == named
    assert still_cached(proxy)


@pytest.mark.parametrize("query", ["metadata_only=true", "metadata_only=1", "package=datatool"])
def test_a_purge_that_says_what_it_means_keeps_the_other_files(proxy, query):
    cache_it(proxy)
    answer = httpx.delete(f"{proxy.url}/api/cache/pub?{query}", headers={"x-api-key": ADMIN})
    assert answer.status_code == 200, answer.text
    assert answer.json()["removed"]["files"] == 0
    assert still_cached(proxy)


def test_a_purge_of_the_package_removes_it(proxy):
    cache_it(proxy)
    answer = httpx.delete(
        f"{proxy.url}/api/cache/pub?package=libzlib", headers={"x-api-key": ADMIN}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["removed"]["files"] == 1
    assert not still_cached(proxy)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"package": "libzlib"}', "application/json"),
        (b'{"metadata_only": true}', "application/json"),
        (b"package=libzlib", "application/x-www-form-urlencoded"),
        (b"libzlib", "text/plain"),
    ],
)
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_a_purge_with_a_body_purges_nothing(proxy, body, content_type, chunked):
    """The scope is the path and the query: a body was never read, and its purge took every
    file of the channel."""
    cache_it(proxy)
    content = iter([body]) if chunked else body
    answer = httpx.request(
        "DELETE",
        f"{proxy.url}/api/cache/pub",
        content=content,
        headers={"x-api-key": ADMIN, "content-type": content_type},
    )
    assert answer.status_code == 400, answer.text
    assert "takes no body" in answer.json()["error"]
    assert still_cached(proxy)


def test_an_empty_body_is_no_body(proxy):
    cache_it(proxy)
    answer = httpx.request(
        "DELETE",
        f"{proxy.url}/api/cache/pub?metadata_only=true",
        content=b"",
        headers={"x-api-key": ADMIN, "content-type": "application/json", "content-length": "0"},
    )
    assert answer.status_code == 200, answer.text
    assert still_cached(proxy)


def test_a_long_unknown_parameter_is_named_shortly(proxy):
    cache_it(proxy)
    answer = httpx.delete(
        f"{proxy.url}/api/cache/pub?{'p' * 30_000}=1", headers={"x-api-key": ADMIN}
    )
    assert answer.status_code == 400, answer.text[:200]
    assert "ppp" in answer.json()["error"] and len(answer.content) < 1000
    assert still_cached(proxy)
