"""`GET /`: the status page, in process: what it shows (HTML and JSON), to whom (private
channels only to a read token, in every token form), what it never shows (credentials, raw
markup from a request), its headers, and the chart's sampled series. No upstream is asked
for a page view."""

from __future__ import annotations

import base64
import hashlib
import html
import re
from pathlib import Path
from typing import Any

import pytest
import respx

from condaproxy.ops.series import record_sample
from condaproxy.settings import ChannelSettings, Secret
from condaproxy.web.app import create_app
from tests.support.channel import Pkg
from tests.support.inproc import (
    Clock,
    built,
    make_settings,
    running,
    services_of,
    token,
    until,
    upstream_subdir,
)

UP = "https://up.example/cf"
ORG = "https://up.example/org"
READ, WRITE, OTHER = "read-token-1234", "write-token-5678", "other-token-9012"
USER_PASSWORD = "userinfo-password-xyz"
UPSTREAM_TOKEN = "upstream-token-abcdef"
BEARER = "upstream-bearer-ghijkl"
BASIC_PASSWORD = "upstream-basic-mnopqr"
SECRETS = (READ, WRITE, OTHER, USER_PASSWORD, UPSTREAM_TOKEN, BEARER, BASIC_PASSWORD)
JSON = {"accept": "application/json"}


def settings_for(tmp_path: Path, **cache: Any) -> Any:
    return make_settings(
        tmp_path / "cache",
        [
            ChannelSettings("cf", UP),
            ChannelSettings(
                "org",
                f"https://someone:{USER_PASSWORD}@up.example/t/{UPSTREAM_TOKEN}/org",
                upstream_bearer=Secret(BEARER),
                upstream_username="someone",
                upstream_password=Secret(BASIC_PASSWORD),
            ),
            ChannelSettings("team", None, private=True),
        ],
        [
            token("reader", READ, team="read"),
            token("ci", WRITE, team="write"),
            token("other", OTHER, cf="read"),
        ],
        **cache,
    )


@pytest.fixture
def router():
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mocked:
        yield mocked


def with_token(form: str, value: str) -> tuple[str, dict[str, str]]:
    """The path prefix and headers that present `value` in one of the accepted forms."""
    if form == "path":
        return f"/t/{value}", {}
    if form == "x-api-key":
        return "", {"x-api-key": value}
    if form == "bearer":
        return "", {"authorization": f"Bearer {value}"}
    basic = base64.b64encode(f"anyone:{value}".encode()).decode()
    return "", {"authorization": f"Basic {basic}"}


FORMS = ["path", "x-api-key", "bearer", "basic"]


async def test_the_root_page_shows_version_channels_and_the_cache(tmp_path, router):
    files = {"tool-1.0-0.conda": b"tool bytes" * 50}
    upstream_subdir(router, UP, "noarch", files)
    async with running(create_app(settings_for(tmp_path, max_size=1 << 30), clock=Clock())) as c:
        assert (await c.get("/cf/noarch/tool-1.0-0.conda")).status_code == 200
        index = services_of(c._transport.app).index  # type: ignore[attr-defined]
        await until(lambda: index.get_file("cf/noarch/tool-1.0-0.conda") is not None)
        page = await c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for shown in ("version 0.1.0", ">cf<", ">org<", "https://up.example/cf", "1.0 GiB"):
            assert shown in page.text, shown
        # The API's description is one link away.
        (link,) = re.findall(r'href="([^"]*/openapi\.json)"', page.text)
        assert (await c.get(link)).json()["openapi"].startswith("3.1")
        data = (await c.get("/", headers=JSON)).json()
    assert data["version"] == "0.1.0"
    assert [ch["name"] for ch in data["channels"]] == ["cf", "org"]
    cf = data["channels"][0]
    assert cf["files"] == 1 and cf["bytes"] == len(files["tool-1.0-0.conda"])
    assert cf["fetched_upstream"] == 1 and cf["upstream_state"] == "ok"
    assert cf["last_revalidated"] == Clock().now and cf["subdirs"] == ["noarch"]
    assert data["store"]["max_size"] == 1 << 30 and data["store"]["caching"] is True
    assert data["store"]["bytes"] == len(files["tool-1.0-0.conda"])


async def test_a_page_view_asks_no_upstream(tmp_path, router):
    async with running(create_app(settings_for(tmp_path), clock=Clock())) as c:
        for path in ("/", "/cf/", "/t/" + READ + "/"):
            assert (await c.get(path)).status_code == 200
    assert not router.calls


@pytest.mark.parametrize("form", FORMS)
async def test_a_private_channel_is_listed_only_to_a_read_token(tmp_path, form):
    async with running(create_app(settings_for(tmp_path), clock=Clock())) as c:
        anonymous = await c.get("/", headers=JSON)
        assert "team" not in [ch["name"] for ch in anonymous.json()["channels"]]
        assert "team" not in (await c.get("/")).text
        for value in (OTHER, "not-a-token-at-all"):  # a token without read on it, a bad one
            prefix, headers = with_token(form, value)
            seen = (await c.get(f"{prefix}/", headers={**headers, **JSON})).json()
            assert "team" not in [ch["name"] for ch in seen["channels"]]
        prefix, headers = with_token(form, READ)
        reader = await c.get(f"{prefix}/", headers={**headers, **JSON})
        assert "team" in [ch["name"] for ch in reader.json()["channels"]]
        html = await c.get(f"{prefix}/", headers=headers)
        assert 'href="team/"' in html.text
        assert READ not in html.text  # the snippets carry a placeholder, never the token
        assert "/t/&lt;YOUR-TOKEN&gt;/team" in html.text


@pytest.mark.parametrize("path", ["/team/", "/team/noarch/", "/team/linux-64/?name=x"])
async def test_a_private_channels_pages_need_a_read_token(tmp_path, path):
    async with running(create_app(settings_for(tmp_path), clock=Clock())) as c:
        refused = await c.get(path)
        assert refused.status_code == 401 and "www-authenticate" in refused.headers
        assert (await c.get(path, headers={"x-api-key": OTHER})).status_code == 403
        allowed = await c.get(f"/t/{READ}{path}", headers=JSON)
        assert allowed.status_code in (200, 404), allowed.text  # 404: nothing uploaded there


async def test_signin_asks_a_browser_for_basic_auth(tmp_path):
    async with running(create_app(settings_for(tmp_path), clock=Clock())) as c:
        asked = await c.get("/?signin=1")
        assert asked.status_code == 401 and "Basic" in asked.headers["www-authenticate"]
        _, headers = with_token("basic", READ)
        assert (await c.get("/?signin=1", headers=headers)).status_code == 200


@pytest.mark.parametrize("path", ["/", "/org/", "/t/" + READ + "/", "/t/" + READ + "/team/"])
@pytest.mark.parametrize("accept", ["text/html", "application/json"])
async def test_no_credential_of_an_upstream_or_a_token_is_ever_shown(tmp_path, path, accept):
    async with running(create_app(settings_for(tmp_path), clock=Clock())) as c:
        page = await c.get(path, headers={"accept": accept})
    assert page.status_code == 200
    body = page.text
    for secret in SECRETS:
        assert secret not in body
    assert "someone@" not in body and "someone:" not in body


HOSTILE = [
    "<script>alert(1)</script>",
    '"><script>alert(1)</script>',
    "'><img src=x onerror=alert(1)>",
    "</textarea><svg onload=alert(1)>",
]


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("param", ["q", "name", "page", "signin", "format"])
async def test_markup_in_a_query_comes_back_escaped_or_refused(tmp_path, router, text, param):
    upstream_subdir(router, UP, "noarch", {"tool-1.0-0.conda": b"x"})
    async with running(create_app(settings_for(tmp_path), clock=Clock())) as c:
        answered = []
        for path in ("/", "/cf/", "/cf/noarch/"):
            page = await c.get(path, params={param: text})
            answered.append(page.status_code)
            assert page.status_code in (200, 400, 401, 404), page.text
            assert not re.search(r"<(script|img|svg)", page.text, re.IGNORECASE), page.text
            if page.status_code >= 400:
                assert page.headers["content-type"] == "application/json"
        assert 200 in answered  # pages that ignore or echo it still answer
        if param == "q":  # echoed back, escaped
            page = await c.get("/cf/noarch/", params={"q": text})
            assert page.status_code == 200 and f'value="{html.escape(text)}"' in page.text


@pytest.mark.parametrize("path", ["/%3Cscript%3E/", "/cf/%3Cscript%3E/", "/t/%3Cscript%3E/"])
async def test_markup_in_a_path_is_refused_as_json(tmp_path, path):
    async with running(create_app(settings_for(tmp_path), clock=Clock())) as c:
        page = await c.get(path)
        assert (await c.get("/")).status_code == 200  # the page a user meant
    assert page.status_code in (400, 404)
    assert page.headers["content-type"] == "application/json"


@pytest.mark.parametrize("path", ["/", "/cf/", "/cf/noarch/", "/t/" + READ + "/team/"])
async def test_every_page_forbids_scripts_and_sniffing(tmp_path, router, path):
    upstream_subdir(router, UP, "noarch", {"tool-1.0-0.conda": b"x"})
    async with running(create_app(settings_for(tmp_path), clock=Clock())) as c:
        for accept in ("text/html", "application/json"):
            page = await c.get(path, headers={"accept": accept})
            assert page.status_code == 200
            csp = page.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src" not in csp
            assert page.headers["x-content-type-options"] == "nosniff"
            assert page.headers["referrer-policy"] == "no-referrer"
            assert "<script" not in page.text
        css = await c.get("/static/condaproxy.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/", "/cf/", "/cf/noarch/"])
async def test_pages_answer_get_and_head_only(tmp_path, method, path):
    async with running(create_app(settings_for(tmp_path), clock=Clock())) as c:
        assert (await c.request(method, path)).status_code == 405
        get, head = await c.get("/"), await c.head("/")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(get.content)


@pytest.mark.parametrize(
    ("external_url", "trusted", "forwarded", "expected"),
    [
        ("https://conda.example.org/cache", (), {}, "https://conda.example.org/cache"),
        ("", (), {"host": "proxy.internal:8080"}, "http://proxy.internal:8080"),
        (
            "",
            ("127.0.0.1",),
            {"x-forwarded-proto": "https", "x-forwarded-host": "conda.example.org"},
            "https://conda.example.org",
        ),
        (  # not from a trusted proxy: the forwarded headers are not believed
            "",
            (),
            {"x-forwarded-proto": "https", "x-forwarded-host": "evil.example"},
            "http://proxy.test",
        ),
        ("", (), {"host": "<script>"}, "http://localhost"),
    ],
)
async def test_snippets_use_the_proxys_external_url(
    tmp_path, external_url, trusted, forwarded, expected
):
    import msgspec

    settings = settings_for(tmp_path)
    server = msgspec.structs.replace(
        settings.server, external_url=external_url, trusted_proxies=trusted
    )
    settings = msgspec.structs.replace(settings, server=server)
    async with running(create_app(settings, clock=Clock())) as c:  # the peer is 127.0.0.1
        data = (await c.get("/cf/", headers={**forwarded, **JSON})).json()
        html = (await c.get("/cf/", headers=forwarded)).text
    assert f"channel_alias: {expected}\n" in data["snippets"]["condarc"]
    assert f'channels = ["{expected}/cf"]' in data["snippets"]["pixi_manifest"]
    assert f'"{UP}" = ["{expected}/cf"]' in data["snippets"]["pixi_mirrors"]
    assert f"mamba install -c {expected}/cf" in data["snippets"]["mamba"]
    assert f"channel_alias: {expected}" in html
    assert "evil.example" not in html


async def test_no_pixi_mirror_is_offered_for_an_upstream_holding_credentials(tmp_path):
    async with running(create_app(settings_for(tmp_path), clock=Clock())) as c:
        data = (await c.get("/org/", headers=JSON)).json()
    assert "pixi_mirrors" not in data["snippets"]
    assert data["upstream"] == "https://up.example/t/***/org"


async def test_the_chart_shows_what_was_served_each_minute(tmp_path, router):
    files = {"tool-1.0-0.conda": b"tool bytes" * 50}
    upstream_subdir(router, UP, "noarch", files)
    clock = Clock()
    async with running(create_app(settings_for(tmp_path), clock=clock)) as c:
        services = services_of(c._transport.app)  # type: ignore[attr-defined]
        pages = c._transport.app.app.pages  # type: ignore[attr-defined]
        await pages.sampler.sample()  # the start, as the sampler takes it
        for _ in range(3):
            await c.get("/cf/noarch/tool-1.0-0.conda")
            await until(lambda: services.index.get_file("cf/noarch/tool-1.0-0.conda") is not None)
        clock.now += 60
        assert await pages.sampler.sample()
        assert not await pages.sampler.sample()  # once a minute, whichever worker asks
        clock.now += 60
        assert await pages.sampler.sample()
        data = (await c.get("/", headers=JSON)).json()
        html = (await c.get("/")).text
        stored = services.index.get_value(("status", "series"), [])
    assert len(stored) == 3
    first, second = data["series"]
    assert (first["cache"], first["upstream"]) == (2, 1)
    assert first["bytes"] == 3 * len(files["tool-1.0-0.conda"])
    assert (second["cache"], second["upstream"], second["bytes"]) == (0, 0, 0)
    assert '<svg viewBox="0 0 600 160"' in html and 'class="cache"' in html


def test_the_series_keeps_an_hour_and_survives_a_counter_reset(tmp_path):
    from condaproxy.ops.series import KEEP, deltas
    from condaproxy.storage.index import Index

    index = Index(tmp_path / "index")
    try:
        for minute in range(KEEP + 20):
            count = float(minute if minute < 70 else minute - 70)  # a restart at minute 70
            record_sample(index, {"cf": [count, 0.0, 0.0, 0.0, 0.0]}, 1000.0 + 60 * minute)
        series = index.get_value(("status", "series"), [])
    finally:
        index.close()
    assert len(series) == KEEP
    points = deltas(series, ["cf"], series[-1]["t"])
    assert all(p.cache >= 0 for p in points)
    assert [p.cache for p in points].count(0.0) == 1  # the restart's first minute


async def test_recent_uploads_and_prefetch_jobs_are_shown(tmp_path, router):
    packages = built(tmp_path / "pkgs", Pkg("mytool", "1.0", "h0", "noarch"))
    ((filename, data),) = packages.items()
    sha = hashlib.sha256(data).hexdigest()
    upstream_subdir(router, UP, "noarch", {"tool-1.0-0.conda": b"t"})
    async with running(create_app(settings_for(tmp_path), clock=Clock())) as c:
        services = services_of(c._transport.app)  # type: ignore[attr-defined]
        up = await c.post(
            f"/api/channels/team/upload/{filename}",
            params={"sha256": sha},
            content=data,
            headers={"x-api-key": WRITE},
        )
        assert up.status_code == 201, up.text
        services.prefetcher.submit("cf", "noarch", ["tool-1.0-0.conda"], False)
        anonymous = (await c.get("/", headers=JSON)).json()
        reader = (await c.get(f"/t/{READ}/", headers=JSON)).json()
        html = (await c.get(f"/t/{READ}/")).text
    assert all(not ch["recent_uploads"] for ch in anonymous["channels"])
    assert [j["channel"] for j in anonymous["prefetch"]] == ["cf"]
    team = next(ch for ch in reader["channels"] if ch["name"] == "team")
    (upload,) = team["recent_uploads"]
    assert (upload["name"], upload["version"], upload["subdir"]) == ("mytool", "1.0", "noarch")
    assert upload["uploaded_by"] == "ci" and upload["uploaded_at"] == Clock().now
    assert "mytool" in html and ">ci<" in html and "Prefetch jobs" in html


async def test_an_upstream_that_fails_is_shown_failing(tmp_path, router):
    files = {"tool-1.0-0.conda": b"t"}
    upstream_subdir(router, UP, "noarch", files)
    clock = Clock()
    async with running(create_app(settings_for(tmp_path), clock=clock)) as c:
        pages = c._transport.app.app.pages  # type: ignore[attr-defined]
        assert (await c.get("/cf/noarch/repodata.json")).status_code == 200
        await pages.sampler.sample()
        router.get(f"{UP}/noarch/repodata.json.zst").respond(503)
        clock.now += 120  # past the ttl: the next request revalidates, and fails
        stale = await c.get("/cf/noarch/repodata.json")
        assert stale.status_code == 200 and stale.headers["x-cache"] == "STALE"
        data = (await c.get("/", headers=JSON)).json()
        html = (await c.get("/")).text
    cf = data["channels"][0]
    assert cf["upstream_state"] == "failing" and cf["upstream_errors_last_hour"] >= 1
    assert cf["stale_serves_last_hour"] == 1 and cf["last_revalidated"] == Clock().now
    assert 'class="bad">failing<' in html
