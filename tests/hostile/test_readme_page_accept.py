"""`curl -H 'Accept: application/json'` on the status and browse pages (README, Status page),
with the Accept headers real clients send, against a real proxy. The page looked for the
substring `application/json` without `text/html`: `application/json;q=0` (JSON refused) got
JSON, and `APPLICATION/JSON` (media types ignore case) or `text/html;q=0.5, application/json`
(JSON preferred) got HTML. JSON is what the client prefers to HTML, by its q-values."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

PAGES = ["/", "/pub/", "/pub/linux-64/", "/pub/linux-64/?name=libzlib"]
JSON = [
    "application/json",
    "APPLICATION/JSON",
    "Application/Json; charset=utf-8",
    "text/html;q=0.5, application/json",
    "application/json, text/plain, */*",  # axios
    "application/json, */*;q=0.1",
    "text/*;q=0.2, application/json;q=0.3",
]
HTML = [
    "",
    "*/*",  # curl, requests, httpx
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",  # a browser
    "application/json;q=0",
    "application/json;q=0, */*",
    "text/html, application/json;q=0.5",
    "application/json, text/html",  # a tie, text/html named: the page
    "application/jsonp",
    "application/json-seq",
]


@pytest.fixture(scope="module")
def proxy(channel_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    base = tmp_path_factory.mktemp("page-accept")
    upstream = Upstream(channel_dir).start()
    config = write_config(base / "proxy.toml", base / "cache", {"pub": {"upstream": upstream.url}})
    started = Proxy(config).start()
    yield started
    started.stop()
    upstream.stop()


def kind(proxy: Proxy, page: str, accept: str) -> str:
    got = httpx.get(f"{proxy.url}{page}", headers={"accept": accept} if accept else {})
    assert got.status_code == 200, got.text
    assert "Accept" in got.headers["vary"]
    return got.headers["content-type"].split(";")[0]


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("accept", JSON)
def test_a_client_preferring_json_gets_json(proxy, page, accept):
    assert kind(proxy, page, accept) == "application/json"


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("accept", HTML)
def test_a_client_preferring_html_or_refusing_json_gets_the_page(proxy, page, accept):
    assert kind(proxy, page, accept) == "text/html"
