"""A prefetch request the proxy would not read as written, against a real proxy. Fields of
the body it does not take (`"with_deps": true`, `"dependencies": true`) and any query
string (`?with_dependencies=true` beside a list body) were ignored: the job warmed the
names alone, and the operator who pulls the cable next finds the closure missing. Such a
request is a 400 naming what was not taken, and no job starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hostile import admin_proxy
from tests.support.processes import Proxy

pytestmark = pytest.mark.integration

ADMIN = "admin-token-60417"
URL = "/api/cache/pub/linux-64/prefetch"


@pytest.fixture(scope="module")
def proxy(channel_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    with admin_proxy(channel_dir, tmp_path_factory.mktemp("prefetch-requests"), ADMIN) as started:
        yield started


def jobs(proxy: Proxy) -> list[dict[str, object]]:
    got = httpx.get(f"{proxy.url}/api/cache/stats", headers={"x-api-key": ADMIN})
    return list(got.json()["prefetch"])


@pytest.mark.parametrize(
    ("query", "body", "named"),
    [
        ("", {"packages": ["datatool"], "with_deps": True}, "with_deps"),
        ("", {"packages": ["datatool"], "dependencies": True}, "dependencies"),
        ("", {"packages": ["datatool"], "withDependencies": True}, "withDependencies"),
        ("", {"package": ["libzlib"], "packages": ["datatool"]}, "package"),
        ("", {"packages": ["datatool"], "subdir": "noarch"}, "subdir"),
        ("?with_dependencies=true", ["datatool"], "with_dependencies"),
        ("?with_dependencies=true", {"packages": ["datatool"]}, "with_dependencies"),
        ("?package=libzlib", {"packages": ["datatool"]}, "package"),
    ],
)
def test_a_prefetch_with_what_it_does_not_read_starts_no_job(proxy, query, body, named):
    before = len(jobs(proxy))
    answer = httpx.post(f"{proxy.url}{URL}{query}", json=body, headers={"x-api-key": ADMIN})
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert named in answer.json()["error"]
    assert len(jobs(proxy)) == before


@pytest.mark.parametrize(
    "body",
    [
        ["datatool"],
        {"packages": ["datatool"]},
        {"packages": ["datatool"], "with_dependencies": True},
    ],
)
def test_a_prefetch_as_documented_starts_its_job(proxy, body):
    answer = httpx.post(f"{proxy.url}{URL}", json=body, headers={"x-api-key": ADMIN})
    assert answer.status_code == 202, answer.text
    assert answer.json()["with_dependencies"] is (
        isinstance(body, dict) and "with_dependencies" in body
    )


def test_a_long_unknown_field_is_named_shortly(proxy):
    answer = httpx.post(
        f"{proxy.url}{URL}",
        json={"packages": ["datatool"], "x" * 100_000: True},
        headers={"x-api-key": ADMIN},
    )
    assert answer.status_code == 400, answer.text[:200]
    assert "xxx" in answer.json()["error"] and len(answer.content) < 1000
