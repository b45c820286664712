"""What a browser or an API client can make of the proxy's own routes, against a real process:
another site's page riding a signed-in browser's token (CSRF), a path token echoed back,
a token header no configured token could ever be, and methods a route does not take."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package

pytestmark = pytest.mark.integration

WRITER = "writer-token-2468"
ADMIN = "admin-token-13579"
METRICS = "metrics-token-8642"
TOKENS = {
    "ci": {"token": WRITER, "roles": {"team": "write"}},
    "ops": {"token": ADMIN, "roles": {"*": "admin"}},
}
TOOL = Pkg("mytool", "1.0", "h0", "linux-64")
UPLOAD = f"/api/channels/team/upload/{TOOL.filename}"


def basic(token: str) -> dict[str, str]:
    """What a browser sends once its user signed in on `/?signin=1` (the token as password)."""
    return {"authorization": "Basic " + base64.b64encode(f"me:{token}".encode()).decode()}


@pytest.fixture
def proxy(upstream, start_proxy):
    return start_proxy(
        {"team": {}, "pub": {"upstream": upstream.url}, "hidden": {"private": True}},
        tokens=TOKENS,
        extra=f'[metrics]\ntoken = "{METRICS}"\n',
    )


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    work = tmp_path_factory.mktemp("web-surface")
    return build_package(TOOL, work / "src", work / "out").read_bytes()


def uploaded(proxy) -> list[str]:
    got = httpx.get(f"{proxy.url}/api/channels/team/packages", headers={"x-api-key": WRITER})
    return [p["filename"] for p in got.json()["packages"]]


# Another site's page, in a browser that signed in with a write or admin token: a form POST,
# or fetch(url, {mode: "no-cors", credentials: "include", body}) with a simple content type.
CROSS_SITE = [
    {"sec-fetch-site": "cross-site", "origin": "https://evil.example"},
    {"sec-fetch-site": "same-site", "origin": "https://evil.proxy.example"},
    {"origin": "https://evil.example"},  # a browser without Fetch Metadata
    {"origin": "null"},  # a sandboxed frame, a redirect chain
]


@pytest.mark.parametrize(
    "browser", CROSS_SITE, ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items())
)
def test_another_sites_page_cannot_upload_purge_or_prefetch_with_a_browsers_token(
    proxy, package, browser
):
    as_writer = {**basic(WRITER), **browser}
    as_admin = {**basic(ADMIN), **browser}
    digest = hashlib.sha256(package).hexdigest()
    raw = httpx.post(
        f"{proxy.url}{UPLOAD}?sha256={digest}",
        content=package,
        headers={**as_writer, "content-type": "text/plain"},
    )
    form = httpx.post(
        f"{proxy.url}/api/channels/team/files",
        files=[("files", (TOOL.filename, package, "application/octet-stream"))],
        headers=as_writer,
    )
    prefetch = httpx.post(
        f"{proxy.url}/api/cache/pub/linux-64/prefetch",
        content=json.dumps({"packages": ["datatool"]}),
        headers={**as_admin, "content-type": "text/plain"},
    )
    purge = httpx.delete(f"{proxy.url}/api/cache", headers=as_admin)
    for answer in (raw, form, prefetch, purge):
        assert answer.status_code == 403, answer.text
        assert "another site" in answer.json()["error"]
    assert uploaded(proxy) == []
    stats = httpx.get(f"{proxy.url}/api/cache/stats", headers={"x-api-key": ADMIN}).json()
    assert stats["prefetch"] == []
    assert WRITER not in proxy.log() and ADMIN not in proxy.log()


@pytest.mark.parametrize(
    "caller",
    [
        {},  # curl, quetz-client, rattler: no browser headers at all
        {"sec-fetch-site": "same-origin", "origin": "{url}"},
        {"sec-fetch-site": "none"},  # typed into the address bar
        {"origin": "{url}"},  # the proxy's own origin, from a browser without Fetch Metadata
    ],
    ids=["client", "same-origin", "user-typed", "own-origin"],
)
def test_clients_and_the_proxys_own_pages_still_upload(proxy, package, caller):
    headers = {k: v.format(url=proxy.url) for k, v in caller.items()}
    answer = httpx.post(
        f"{proxy.url}{UPLOAD}", content=package, headers={**basic(WRITER), **headers}
    )
    assert answer.status_code == 201, answer.text
    assert uploaded(proxy) == [TOOL.filename]


def test_a_path_token_is_never_echoed_in_an_error_body_or_the_log(proxy):
    """A token the proxy does not know (a typo, a revoked one, the user's anaconda.org token)
    is a secret all the same: `/t/<token>` without a trailing slash, or after the channel."""
    secret = "users-anaconda-org-token-7f3a9c"
    asked = [
        httpx.get(f"{proxy.url}/t/{secret}"),
        httpx.get(f"{proxy.url}/pub/t/{secret}"),
        httpx.get(f"{proxy.url}/pub/noarch/t/{secret}"),
        httpx.delete(f"{proxy.url}/api/cache/t/{secret}", headers={"x-api-key": ADMIN}),
    ]
    for answer in asked:
        assert answer.status_code in (400, 404), answer.text
        assert answer.headers["content-type"] == "application/json"
        assert secret not in answer.text, answer.text
    log = proxy.log()
    assert log.count('"request"') >= len(asked)
    assert secret not in log


@pytest.mark.parametrize(
    "presented",
    [
        [(b"x-api-key", "é-token".encode("latin-1"))],
        [(b"authorization", b"Bearer \xe9\xe8")],
        [(b"authorization", b"Basic " + base64.b64encode("me:pässwörd".encode()))],
    ],
    ids=["x-api-key", "bearer", "basic"],
)
def test_a_token_with_non_ascii_characters_is_a_stranger_not_a_500(proxy, presented):
    scraped = httpx.get(f"{proxy.url}/metrics", headers=presented)
    assert scraped.status_code == 200, scraped.text
    assert 'channel="hidden"' not in scraped.text  # folded, as for any stranger
    for path in ("/api/cache/stats", "/hidden/", "/hidden/noarch/repodata.json"):
        assert httpx.get(f"{proxy.url}{path}", headers=presented).status_code == 401, path
    assert httpx.get(f"{proxy.url}/", headers=presented).status_code == 200
    assert '"request failed"' not in proxy.log()


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/pub/noarch/repodata.json", {"GET", "HEAD"}),
        ("POST", "/", {"GET", "HEAD"}),
        ("OPTIONS", "/pub/", {"GET", "HEAD"}),
        ("DELETE", "/healthz", {"GET", "HEAD"}),
        ("POST", "/metrics", {"GET", "HEAD"}),
        ("PUT", "/api/policy", {"GET", "HEAD"}),
    ],
)
def test_a_method_a_route_does_not_take_is_a_405_naming_the_ones_it_does(
    proxy, method, path, allowed
):
    answer = httpx.request(method, f"{proxy.url}{path}")
    assert answer.status_code == 405, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert {m.strip() for m in answer.headers["allow"].split(",")} == allowed


def test_an_unexpected_failure_in_an_api_route_is_a_json_500(tmp_path: Path, monkeypatch):
    """The last line of defence answers JSON behind Starlette's routes too (README, Logs)."""
    from starlette.testclient import TestClient

    from condaproxy.settings import ChannelSettings
    from condaproxy.web import health
    from condaproxy.web.app import create_app
    from tests.support.inproc import Clock, make_settings

    def broken(*args, **kwargs):
        raise RuntimeError("the exposition broke")

    monkeypatch.setattr(health, "exposition", broken)
    settings = make_settings(tmp_path / "cache", [ChannelSettings("local")])
    with TestClient(create_app(settings, clock=Clock()), raise_server_exceptions=False) as c:
        answer = c.get("/metrics")
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/json"
    assert "internal error" in answer.json()["error"]


def test_answers_that_depend_on_the_token_are_never_kept_by_a_shared_cache(proxy, package):
    """A cache in front of the proxy (Varnish keeps any 200 for 120 s by default) keys on
    the URL: what an X-API-Key caller was told must not be served to the next caller."""
    assert (
        httpx.post(f"{proxy.url}{UPLOAD}", content=package, headers=basic(WRITER)).status_code
        == 201
    )
    admin = {"x-api-key": ADMIN}
    answers = [
        httpx.get(f"{proxy.url}/api/channels/hidden/packages", headers=admin),
        httpx.get(f"{proxy.url}/api/channels/team/packages", headers=admin),
        httpx.get(f"{proxy.url}/api/cache/stats", headers=admin),
        httpx.get(f"{proxy.url}/api/policy", headers=admin),
        httpx.get(f"{proxy.url}/metrics", headers=admin),
        httpx.get(f"{proxy.url}/nope/noarch/repodata.json", headers=admin),  # lists "hidden"
        httpx.get(f"{proxy.url}/hidden/noarch/repodata.json"),  # 401
    ]
    assert "hidden" in answers[-2].json()["channels"]
    for answer in answers:
        assert "no-store" in answer.headers.get("cache-control", ""), answer.request.url
    stylesheet = httpx.get(f"{proxy.url}/static/condaproxy.css")
    assert stylesheet.headers["cache-control"].startswith("public")
