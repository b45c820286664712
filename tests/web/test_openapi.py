"""/openapi.json describes the HTTP surface: a valid OpenAPI document, covering every route the
app serves, each operation with its errors."""

from __future__ import annotations

from pathlib import Path

from openapi_spec_validator import validate
from starlette.testclient import TestClient

from condaproxy import __version__
from condaproxy.settings import ChannelSettings
from condaproxy.web.app import create_app
from tests.support.inproc import Clock, make_settings


def test_the_document_is_valid_and_covers_every_route(tmp_path: Path):
    settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", "https://up.example/cf")])
    with TestClient(create_app(settings, clock=Clock())) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert document["info"]["version"] == __version__
    paths = set(document["paths"])
    for route in (
        "/",
        "/{channel}/",
        "/{channel}/{subdir}/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/cache/stats",
        "/api/cache",
        "/api/cache/{scope}",
        "/api/cache/{channel}/{subdir}/prefetch",
        "/api/channels/{channel}/upload/{filename}",
        "/api/channels/{channel}/files",
        "/api/channels/{channel}/packages",
        "/api/channels/{channel}/packages/{subdir}/{filename}",
    ):
        assert route in paths, route
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation["responses"], (path, method)
            if path.startswith("/api/"):
                assert any(code.startswith("4") for code in operation["responses"]), path
