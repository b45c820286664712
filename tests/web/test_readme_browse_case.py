"""README "Status page": `/<channel>/<subdir>/?q=` lists the names with that prefix and
`?name=<package>` its files. Conda names are lower case and clients compare them ignoring case,
so `?q=NumP` and `?name=NumPy` find numpy rather than nothing and a 404."""

from __future__ import annotations

from pathlib import Path

import respx
from starlette.testclient import TestClient

from condaproxy.settings import ChannelSettings
from condaproxy.web.app import create_app
from tests.support.inproc import Clock, make_settings, upstream_subdir

UP = "https://up.example/cf"
JSON = {"Accept": "application/json"}


def test_browsing_finds_names_whatever_their_case(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "cache", [ChannelSettings("cf", UP)])
    files = {"numpy-2.0-0.conda": b"n" * 300, "scipy-1.0-0.conda": b"s" * 200}
    with respx.mock(assert_all_called=False) as router:
        upstream_subdir(router, UP, "noarch", files)
        with TestClient(create_app(settings, clock=Clock())) as client:
            for q in ("nump", "NumP"):
                page = client.get("/cf/noarch/", params={"q": q}, headers=JSON)
                assert page.status_code == 200
                assert [p["name"] for p in page.json()["packages"]] == ["numpy"], q
            for name in ("numpy", "NumPy"):
                page = client.get("/cf/noarch/", params={"name": name}, headers=JSON)
                assert page.status_code == 200, name
                assert page.json()["name"] == "numpy"
                assert [f["filename"] for f in page.json()["files"]] == ["numpy-2.0-0.conda"]
            missing = client.get("/cf/noarch/", params={"name": "pandas"}, headers=JSON)
            assert missing.status_code == 404
