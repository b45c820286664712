"""README "Private packages": "Quetz's API, so quetz-client works unchanged ... or multipart".
Quetz's multipart endpoint is `POST /api/channels/<channel>/files/` (with the slash) and takes
`force` as a form field beside the `files` parts; the proxy takes both, and `?force=` too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from condaproxy.settings import ChannelSettings, Settings
from condaproxy.web.app import create_app
from tests.support.channel import Pkg
from tests.support.inproc import Clock, built, make_settings, token

WRITER = "write-token-0001"
TOOL = Pkg("mytool", "1.0", "h0", "linux-64")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path / "cache", [ChannelSettings("team")], [token("ci", WRITER, team="write")]
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=Clock())) as c:
        yield c


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return built(tmp_path_factory.mktemp("pkg"), TOOL)[TOOL.filename]


def upload(client: TestClient, data: bytes, url: str, **form: str) -> int:
    files = {"files": (TOOL.filename, data, "application/octet-stream")}
    headers = {"X-API-Key": WRITER}
    return client.post(url, files=files, data=form or None, headers=headers).status_code


def test_quetz_form_force_replaces_an_existing_file(client: TestClient, package: bytes) -> None:
    url = "/api/channels/team/files/"  # Quetz's path, trailing slash included
    assert upload(client, package, url) == 201
    assert upload(client, package, url) == 409
    assert upload(client, package, url, force="true") == 201
    assert upload(client, package, url, force="True") == 201
    assert upload(client, package, url, force="false") == 409
    assert upload(client, package, url + "?force=true") == 201


def test_a_force_field_that_is_not_a_boolean_is_a_400(client: TestClient, package: bytes) -> None:
    assert upload(client, package, "/api/channels/team/files", force="please") == 400
