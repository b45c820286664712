"""README "Operating it": `DELETE /api/cache/<channel>?package=numpy` purges every file of a
package. Package names compare as conda compares them, ignoring case, so `?package=NumPy`
purges numpy's files too instead of reporting nothing removed."""

from __future__ import annotations

import time
from pathlib import Path

import respx
from starlette.testclient import TestClient

from condaproxy.settings import ChannelSettings
from condaproxy.web.app import create_app
from tests.support.inproc import Clock, make_settings, token, upstream_subdir

UP = "https://up.example/cf"
ADMIN = "admin-token-0001"


def test_purge_by_package_name_ignores_case(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "cache", [ChannelSettings("cf", UP)], [token("ops", ADMIN, star="admin")]
    )
    files = {"numpy-2.0-0.conda": b"n" * 300, "scipy-1.0-0.conda": b"s" * 200}
    with respx.mock(assert_all_called=False) as router:
        upstream_subdir(router, UP, "noarch", files)
        with TestClient(create_app(settings, clock=Clock())) as client:
            for name in files:
                assert client.get(f"/cf/noarch/{name}").status_code == 200
            for _ in range(200):  # a download is kept just after its last byte went out
                stats = client.get("/api/cache/stats", headers={"X-API-Key": ADMIN}).json()
                if stats["channels"]["cf"]["files"] == 2:
                    break
                time.sleep(0.02)
            assert stats["channels"]["cf"]["files"] == 2
            answer = client.delete(
                "/api/cache/cf", params={"package": "NumPy"}, headers={"X-API-Key": ADMIN}
            )
            assert answer.status_code == 200
            assert answer.json()["removed"]["files"] == 1
            assert answer.json()["removed"]["bytes"] == 300
            stats = client.get("/api/cache/stats", headers={"X-API-Key": ADMIN}).json()
            assert stats["channels"]["cf"]["files"] == 1  # scipy stays
