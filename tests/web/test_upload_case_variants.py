"""An upload whose file name differs from an existing one only in case is the same file to a
client (names compare case-folded, and a case-insensitive disk holds one of them): without
`force` it is a 409 naming the existing file, and with `force` it replaces that file, so the
channel never lists both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from condaproxy.settings import ChannelSettings
from condaproxy.web.app import create_app
from tests.support.channel import Pkg
from tests.support.inproc import Clock, built, make_settings, token

WRITER = "write-token-0001"
LOWER = Pkg("mytool", "1.0", "h0", "linux-64")
MIXED = Pkg("mytool", "1.0", "H0", "linux-64")  # names are lower-case; builds need not be
URL = "/api/channels/team/files"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path / "cache", [ChannelSettings("team")], [token("ci", WRITER, team="write")]
    )
    with TestClient(create_app(settings, clock=Clock())) as c:
        yield c


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return built(tmp_path_factory.mktemp("pkg"), LOWER, MIXED)


def upload(client: TestClient, pkg: Pkg, data: bytes, force: bool = False):  # type: ignore[no-untyped-def]
    files = {"files": (pkg.filename, data, "application/octet-stream")}
    query = "?force=true" if force else ""
    return client.post(URL + query, files=files, headers={"X-API-Key": WRITER})


def listed(client: TestClient) -> set[str]:
    document = client.get("/team/linux-64/repodata.json").json()
    return set(document["packages.conda"]) | set(document["packages"])


@pytest.mark.parametrize(("first", "second"), [(LOWER, MIXED), (MIXED, LOWER)])
def test_a_case_variant_is_the_same_file(client, packages, first: Pkg, second: Pkg) -> None:
    assert upload(client, first, packages[first.filename]).status_code == 201
    refused = upload(client, second, packages[second.filename])
    assert refused.status_code == 409, refused.text
    assert first.filename in refused.json()["error"]
    assert listed(client) == {first.filename}
    replaced = upload(client, second, packages[second.filename], force=True)
    assert replaced.status_code == 201, replaced.text
    assert listed(client) == {second.filename}
    assert client.get(f"/team/linux-64/{first.filename}").status_code == 404
    got = client.get(f"/team/linux-64/{second.filename}")
    assert got.status_code == 200 and got.content == packages[second.filename]
