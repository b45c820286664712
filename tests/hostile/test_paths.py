"""Hostile paths against a real proxy in front of a real upstream: a request reaches only the
resource it names.

Two channels share one upstream host: `pub` (public) -> <up>/public and `secret` (private, with
an upstream bearer) -> <up>/secret. The test upstream decodes paths once and resolves them on
disk, like a plain file server, so `/public/%2e%2e/secret/...` sent upstream *would* be served
from `/secret/`. Every encoding of a path step, on every route, must be a 400/414 of our own,
answered before the upstream hears anything.
"""

from __future__ import annotations

import http.client
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from posixpath import normpath
from urllib.parse import unquote

import pytest

from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

ADMIN = "admin-token-0123"
READER = "reader-token-0123"
SECRET_FILE = "secret/linux-64/secret-1.0-0.conda"
SECRET_BYTES = b"SECRET PACKAGE BYTES"

# `..` in every way a client can write it: literal, single, double, triple and mixed encodings.
DOTDOT = [
    "..",
    "%2e%2e",
    "%2E%2E",
    ".%2e",
    "%2e.",
    "%252e%252e",
    "%252E%252e",
    "%2e%252e",
    "%252e.",
    "%25252e%25252e",
]
# A whole traversal packed into one segment behind encoded separators.
PACKED = [
    "..%2fsecret",
    "..%2Fsecret",
    "%2e%2e%2fsecret",
    "..%252fsecret",
    "%252e%252e%252fsecret",
    "..%5csecret",
    "..%255csecret",
    "%2e%2e%5csecret",
]

# {x} is the attack segment. Channel routes first: file, metadata, shard index, labels and the
# `/t/<token>/` form in both places. The attack is the first route with `%252e%252e`.
CHANNEL_ROUTES = [
    "/pub/{x}/secret/linux-64/secret-1.0-0.conda",
    "/pub/{x}/secret/noarch/repodata.json",
    "/pub/{x}/secret/linux-64/repodata_shards.msgpack.zst",
    "/pub/label/{x}/{x}/secret/linux-64/secret-1.0-0.conda",
    "/pub/label/dev/{x}/{x}/{x}/secret/noarch/repodata.json",
    "/pub/linux-64/{x}/{x}/secret/linux-64/secret-1.0-0.conda",
    "/t/" + READER + "/pub/{x}/secret/linux-64/secret-1.0-0.conda",
    "/pub/t/" + READER + "/{x}/secret/linux-64/secret-1.0-0.conda",
    "/t/" + READER + "/pub/label/{x}/{x}/secret/noarch/repodata.json",
]
PACKED_ROUTES = [
    "/pub/{x}/linux-64/secret-1.0-0.conda",
    "/pub/label/{x}/noarch/repodata.json",
    "/pub/linux-64/{x}%2flinux-64%2fsecret-1.0-0.conda",
    "/pub/t/" + READER + "/{x}/noarch/repodata.json",
]
# The upload and admin APIs (as an admin, so only the path can stop them).
API_ROUTES = [
    ("POST", "/api/channels/pub/{x}/secret/upload/x-1.0-0.conda"),
    ("POST", "/api/channels/pub/upload/{x}"),
    ("POST", "/api/channels/pub/{x}/secret/files"),
    ("GET", "/api/channels/pub/{x}/secret/packages"),
    ("DELETE", "/api/channels/pub/packages/{x}/x-1.0-0.conda"),
    ("DELETE", "/api/channels/pub/packages/linux-64/{x}"),
    ("DELETE", "/api/channels/pub/{x}/secret/packages/linux-64/x-1.0-0.conda"),
    ("DELETE", "/api/cache/pub/{x}"),
    ("DELETE", "/api/cache/pub/linux-64/{x}"),
    ("DELETE", "/api/cache/pub/{x}/secret/linux-64"),
    ("POST", "/api/cache/pub/{x}/prefetch"),
    ("POST", "/api/cache/pub/{x}/secret/linux-64/prefetch"),
    ("GET", "/t/" + ADMIN + "/api/channels/pub/{x}/secret/packages"),
    ("DELETE", "/t/" + ADMIN + "/api/cache/pub/{x}"),
]


@pytest.fixture(scope="module")
def two_channels(
    channel_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Proxy, Upstream]]:
    base = tmp_path_factory.mktemp("hostile-paths")
    served = base / "served"
    shutil.copytree(channel_dir, served / "public")
    shutil.copytree(channel_dir, served / "secret")
    (served / SECRET_FILE).write_bytes(SECRET_BYTES)
    upstream = Upstream(served).start()
    config = write_config(
        base / "proxy.toml",
        base / "cache",
        {
            "pub": {"upstream": f"{upstream.url}/public"},
            "secret": {
                "upstream": f"{upstream.url}/secret",
                "private": True,
                "upstream_bearer": "upstream-bearer-0123",
            },
            # Channels whose names start like the proxy's own routes.
            "healthz-mirror": {"upstream": f"{upstream.url}/public"},
            "metricsfoo": {"upstream": f"{upstream.url}/public"},
            "apis": {"upstream": f"{upstream.url}/public"},
        },
        tokens={
            "admin": {"token": ADMIN, "roles": {"*": "admin"}},
            "reader": {"token": READER, "roles": {"secret": "read"}},
        },
    )
    proxy = Proxy(config).start()
    yield proxy, upstream
    proxy.stop()
    upstream.stop()


def send(
    proxy: Proxy, method: str, raw_path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, str]:
    """One request with the path exactly as given (no client-side normalising or encoding)."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=15)
    try:
        conn.request(method, raw_path, body=b"" if method != "GET" else None, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("content-type") or ""
    finally:
        conn.close()


def outside_public(seen: list[dict[str, object]]) -> list[str]:
    """Raw paths the upstream received that resolve outside /public/ (decoding as often as it
    takes), or that still hold an encoded byte."""
    bad = []
    for request in seen:
        raw = str(request["raw_path"])
        path = raw
        for _ in range(4):
            path = unquote(path)
        if "%" in raw or not normpath(path.replace("\\", "/")).startswith("/public/"):
            bad.append(raw)
    return bad


def assert_refused(status: int, body: bytes, ctype: str, expected: int = 400) -> dict:
    assert status == expected, body[:300]
    assert ctype.startswith("application/json"), ctype
    error = json.loads(body)
    assert error["status"] == expected and error["error"]
    return dict(error)


def _attack(two_channels: tuple[Proxy, Upstream], method: str, path: str) -> None:
    proxy, upstream = two_channels
    upstream.reset()
    status, body, ctype = send(proxy, method, path, {"x-api-key": ADMIN})
    seen = upstream.seen()
    assert outside_public(seen) == [], f"{path} reached another channel upstream"
    assert seen == [], f"{path} reached the upstream at all"
    assert SECRET_BYTES not in body
    assert_refused(status, body, ctype)


CHANNEL_CASES = [(route, x) for route in CHANNEL_ROUTES for x in DOTDOT]
CHANNEL_CASES += [(route, x) for route in PACKED_ROUTES for x in PACKED]


@pytest.mark.parametrize(("route", "dotdot"), CHANNEL_CASES)
def test_encoded_dotdot_on_channel_routes_cannot_reach_another_channel(
    two_channels: tuple[Proxy, Upstream], route: str, dotdot: str
) -> None:
    _attack(two_channels, "GET", route.format(x=dotdot))


@pytest.mark.parametrize(("method", "route"), API_ROUTES)
@pytest.mark.parametrize(
    "dotdot", ["%2e%2e", ".%2e", "%252e%252e", "%2e%252e", "..%2fsecret", "..%252fsecret"]
)
def test_encoded_dotdot_on_api_routes_is_refused_before_anything_runs(
    two_channels: tuple[Proxy, Upstream], method: str, route: str, dotdot: str
) -> None:
    _attack(two_channels, method, route.format(x=dotdot))


@pytest.mark.parametrize(
    "path",
    [
        "/pub/linux-64/x-1.0-0%00.conda",
        "/pub/linux-64/x-1.0-0%0a.conda",
        "/pub/linux-64/x-1.0-0%7f.conda",
        "/pub/linux-64/x-1.0-0%c3%a9.conda",
        "/pub/linux-64/x-1.0-0%3f.conda",
        "/pub/linux-64/x-1.0-0%23.conda",
        "/pub/linux-64/x-1.0-0%20.conda",
        "/pub/linux-64/x-1.0-0%25.conda",
        "/pub/linux-64/x-1.0-0%zz.conda",
        "/pub/linux-64/x-1.0-0%.conda",
        "/pub/label/dev%0a/noarch/repodata.json",
        "/pub/linux-64%0a/repodata.json",
        "/pub//linux-64/repodata.json",
        "/pub/./linux-64/repodata.json",
        "/pub/linux-64/x-1.0-0\\.conda",
    ],
)
def test_control_characters_bad_escapes_and_empty_segments_are_refused(
    two_channels: tuple[Proxy, Upstream], path: str
) -> None:
    _attack(two_channels, "GET", path)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/cache/pub/linux-64%0a/prefetch"),
        ("DELETE", "/api/cache/pub/linux-64%0a"),
        ("DELETE", "/api/channels/pub/packages/linux-64%0a/x-1.0-0.conda"),
        ("DELETE", "/api/channels/pub/packages/not_a_subdir/x-1.0-0.conda"),
        ("DELETE", "/api/cache/pub/not_a_subdir"),
        ("DELETE", "/api/cache/pub/linux-64/index.html"),
        ("POST", "/api/channels/pub/upload/x-1.0-0%00.conda"),
    ],
)
def test_api_subdirs_and_file_names_follow_the_channel_grammar(
    two_channels: tuple[Proxy, Upstream], method: str, path: str
) -> None:
    _attack(two_channels, method, path)


@pytest.mark.parametrize(
    "path",
    [
        "/t/sekr%252e%252et/pub/noarch/repodata.json",
        "/t/sekr%00t/pub/noarch/repodata.json",
        "/pub/t/sekr!t/noarch/repodata.json",
        "/t/sekr%3ft/api/channels/pub/packages",
    ],
)
def test_a_malformed_path_token_is_refused_and_never_echoed(
    two_channels: tuple[Proxy, Upstream], path: str
) -> None:
    proxy, upstream = two_channels
    upstream.reset()
    status, body, ctype = send(proxy, "GET", path)
    assert_refused(status, body, ctype)
    assert b"sekr" not in body
    assert upstream.seen() == []


@pytest.mark.parametrize(
    "path",
    [
        "/pub/linux-64/" + "a" * 300 + "-1.0-0.conda",
        "/pub/label/" + "d" * 300 + "/noarch/repodata.json",
        "/pub/" + "label/dev/" * 110 + "noarch/repodata.json",
        "/api/channels/pub/upload/" + "a" * 300 + "-1.0-0.conda",
    ],
)
def test_over_long_paths_and_names_get_our_own_414_not_a_502(
    two_channels: tuple[Proxy, Upstream], path: str
) -> None:
    proxy, upstream = two_channels
    upstream.reset()
    # A real upstream refuses such a path with its own 414, which we would relay as a 502.
    upstream.override("/public" + path.removeprefix("/pub"), status=414)
    status, body, ctype = send(proxy, "POST" if "/api/" in path else "GET", path)
    assert_refused(status, body, ctype, 414)
    assert upstream.seen() == []


def test_refused_paths_leave_no_traceback_in_the_log(two_channels: tuple[Proxy, Upstream]) -> None:
    proxy, _ = two_channels
    send(proxy, "GET", "/pub/%252e%252e/secret/noarch/repodata.json")
    send(proxy, "GET", "/pub/linux-64/" + "a" * 2000)
    assert "Traceback" not in proxy.log()


def test_well_formed_requests_still_reach_their_channel(
    two_channels: tuple[Proxy, Upstream],
) -> None:
    proxy, upstream = two_channels
    upstream.reset()
    status, body, _ = send(proxy, "GET", "/pub/noarch/repodata.json")
    assert status == 200 and json.loads(body)["info"]["subdir"] == "noarch"
    status, body, _ = send(proxy, "GET", "/pub/label/dev/noarch/repodata.json")
    assert status == 404 and b"upstream" in body  # label paths are passed through
    status, _, _ = send(proxy, "GET", "/pub/linux-64/datatool-1.0-h2.conda")
    assert status == 200
    seen = upstream.seen()
    assert seen and outside_public(seen) == []
    status, _, _ = send(proxy, "GET", f"/t/{READER}/secret/noarch/repodata.json")
    assert status == 200


@pytest.mark.parametrize("channel", ["healthz-mirror", "metricsfoo", "apis"])
def test_channels_named_like_a_proxy_route_are_reachable(
    two_channels: tuple[Proxy, Upstream], channel: str
) -> None:
    proxy, _ = two_channels
    status, body, _ = send(proxy, "GET", f"/{channel}/noarch/repodata.json")
    assert status == 200, body[:300]
    assert json.loads(body)["info"]["subdir"] == "noarch"
    status, _, _ = send(proxy, "GET", f"/t/{READER}/{channel}/noarch/repodata.json")
    assert status == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/healthz", 200),
        ("/readyz", 200),
        ("/metrics", 200),
        ("/", 200),  # the status page (web/pages.py)
        ("/openapi.json", 200),
        ("/static/app.css", 404),
        ("/api/nothing", 404),
    ],
)
def test_the_proxy_keeps_its_own_first_segments(
    two_channels: tuple[Proxy, Upstream], path: str, status: int
) -> None:
    proxy, _ = two_channels
    got, body, ctype = send(proxy, "GET", path)
    assert got == status, body[:300]
    if status == 404:
        # Starlette's own 404, not the channel router's "unknown channel".
        assert ctype.startswith("application/json") and "channels" not in json.loads(body)


# Every route that can answer "unknown channel".
UNKNOWN = [
    ("GET", "/nope/noarch/repodata.json"),
    ("GET", "/nope/sub/linux-64/x-1.0-0.conda"),
    ("GET", "/api/channels/nope/packages"),
    ("POST", "/api/channels/nope/upload/x-1.0-0.conda"),
    ("POST", "/api/channels/nope/files"),
    ("DELETE", "/api/channels/nope/packages/noarch/x-1.0-0.conda"),
    ("DELETE", "/api/cache/nope"),
    ("POST", "/api/cache/nope/noarch/prefetch"),
]


@pytest.mark.parametrize(("method", "path"), UNKNOWN)
def test_unknown_channel_404_never_names_a_private_channel_to_an_anonymous_caller(
    two_channels: tuple[Proxy, Upstream], method: str, path: str
) -> None:
    proxy, _ = two_channels
    for headers in ({}, {"x-api-key": "not-a-token-at-all"}):
        status, body, _ = send(proxy, method, path, headers)
        assert status == 404, body[:300]
        assert b"secret" not in body
        assert "pub" in json.loads(body)["channels"]


@pytest.mark.parametrize(("method", "path"), UNKNOWN)
@pytest.mark.parametrize("where", ["header", "path"])
def test_unknown_channel_404_names_private_channels_the_caller_may_read(
    two_channels: tuple[Proxy, Upstream], method: str, path: str, where: str
) -> None:
    proxy, _ = two_channels
    if where == "header":
        status, body, _ = send(proxy, method, path, {"authorization": f"Bearer {READER}"})
    else:
        status, body, _ = send(proxy, method, f"/t/{READER}{path}")
    assert status == 404, body[:300]
    assert json.loads(body)["channels"] == sorted(
        ["apis", "healthz-mirror", "metricsfoo", "pub", "secret"]
    )
    assert READER not in body.decode()
