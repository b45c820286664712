"""README promises about the proxy's own routes, as a tester varies them: a 405's `Allow`
names what the endpoint takes ("other methods get a 405 with `Allow`, as every route does"),
a trailing slash on the API, health and metrics routes is the same route, and a bare channel
name is answered as the channel it names, not as an unknown one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import respx
from starlette.testclient import TestClient

from condaproxy.settings import ChannelSettings, Settings
from condaproxy.web.app import create_app
from tests.support.inproc import Clock, make_settings, token, upstream_subdir

UP = "https://up.example/"
ADMIN, WRITER = "admin-token-0001", "write-token-0001"
PKG = b"p" * 300


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path / "cache",
        [ChannelSettings("cf", UP + "cf"), ChannelSettings("team")],
        [token("ops", ADMIN, star="admin"), token("ci", WRITER, team="write")],
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with respx.mock(assert_all_called=False) as mocked:
        upstream_subdir(mocked, UP + "cf", "noarch", {"p-1.0-0.conda": PKG})
        with TestClient(create_app(settings, clock=Clock())) as c:
            yield c


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/api/channels/team/upload/p-1.0-0.conda", "POST"),
        ("PUT", "/api/channels/team/upload/p-1.0-0.conda", "POST"),
        ("GET", "/api/channels/team/files", "POST"),
        ("DELETE", "/api/channels/team/files", "POST"),
        ("POST", "/api/channels/team/packages", "GET, HEAD"),
        ("PUT", "/api/channels/team/packages", "GET, HEAD"),
        ("GET", "/api/channels/team/packages/noarch/p-1.0-0.conda", "DELETE"),
        ("PATCH", "/api/channels/team/packages/noarch/p-1.0-0.conda", "DELETE"),
    ],
)
def test_upload_api_405_allows_only_what_the_endpoint_takes(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    answer = client.request(method, path, headers={"X-API-Key": WRITER})
    assert answer.status_code == 405
    assert answer.headers["allow"] == allow
    assert answer.json()["status"] == 405


def test_upload_api_unknown_endpoint_is_404_for_any_method(client: TestClient) -> None:
    for method in ("GET", "PUT", "POST"):
        answer = client.request(method, "/api/channels/team/nothing", headers={"X-API-Key": WRITER})
        assert answer.status_code == 404, method


def test_upload_listing_answers_head(client: TestClient) -> None:
    answer = client.head("/api/channels/team/packages", headers={"X-API-Key": WRITER})
    assert answer.status_code == 200


@pytest.mark.parametrize(
    "path", ["/healthz/", "/readyz/", "/metrics/", "/api/cache/stats/", "/api/policy/"]
)
def test_trailing_slash_is_the_same_route(client: TestClient, path: str) -> None:
    headers = {"X-API-Key": ADMIN}
    with_slash = client.get(path, headers=headers)
    without = client.get(path.rstrip("/"), headers=headers)
    assert with_slash.status_code == without.status_code == 200


def test_trailing_slash_on_purge_and_listing(client: TestClient) -> None:
    assert client.get("/cf/noarch/repodata.json").status_code == 200
    purged = client.delete("/api/cache/cf/", headers={"X-API-Key": ADMIN})
    assert purged.status_code == 200
    assert purged.json()["scope"] == {"channel": "cf"}
    everything = client.delete("/api/cache/", headers={"X-API-Key": ADMIN})
    assert everything.status_code == 200
    assert everything.json()["scope"] == {}
    listing = client.get("/api/channels/team/packages/", headers={"X-API-Key": WRITER})
    assert listing.status_code == 200
    assert listing.json()["channel"] == "team"


def test_a_doubled_slash_is_still_refused(client: TestClient) -> None:
    assert client.get("/healthz//").status_code == 400


def test_bare_channel_name_is_not_an_unknown_channel(client: TestClient) -> None:
    for path in ("/cf", f"/t/{WRITER}/team"):
        answer = client.get(path)
        assert answer.status_code == 404
        body = answer.json()
        assert "unknown channel" not in body["error"]
        assert "names a channel" in body["error"]
        assert "/" + path.rsplit("/", 1)[1] + "/'" in body["error"]  # points at its page
    unknown = client.get("/nope").json()
    assert "unknown channel" in unknown["error"]
    assert unknown["channels"] == ["cf", "team"]
