"""What orchestrators and scrapers ask, in-process: /healthz, /readyz (ready, not started, no
cache directory, caching off and why) and /metrics, where private channel names are shown only
to the metrics token or an admin token."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx
from starlette.testclient import TestClient

from condaproxy.settings import ChannelSettings, Settings
from condaproxy.web.app import create_app
from tests.support.inproc import Clock, make_settings, sample, token, upstream_subdir

UP = "https://up.example/"
METRICS, ADMIN, CF_ADMIN, READ = (
    "metrics-token-01",
    "admin-token-001",
    "cf-admin-00001",
    "read-0000001",
)
PKG = b"p" * 500


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mocked:
        for name in ("cf", "hidden", "hidden2"):
            upstream_subdir(mocked, UP + name, "noarch", {"p-1.0-0.conda": PKG})
        yield mocked


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path / "cache",
        [
            ChannelSettings("cf", UP + "cf"),
            ChannelSettings("hidden", UP + "hidden", private=True),
            ChannelSettings("hidden2", UP + "hidden2", private=True),
        ],
        [
            token("ops", ADMIN, star="admin"),
            token("cfops", CF_ADMIN, cf="admin"),
            token("reader", READ, hidden="read", hidden2="read"),
        ],
        metrics_token=METRICS,
    )


@pytest.fixture
def client(settings, router) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=Clock())) as c:
        yield c


def test_healthz_answers_get_and_head(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.head("/healthz").status_code == 200


def test_readyz_is_ready_with_the_disk_it_has(client):
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ok" and body["problems"] == [] and body["caching"] is True
    assert body["free_disk"] > 0 and body["min_free"] == 0
    assert "caching_off_because" not in body
    assert client.head("/readyz").status_code == 200


def test_readyz_before_start_up_is_503(settings):
    app = create_app(settings)  # no lifespan has run: nothing is built yet
    answer = TestClient(app).get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["problems"][0] == "not started" and answer.json()["caching"] is False


def test_readyz_without_its_cache_directory_is_503(client, settings):
    shutil.rmtree(settings.cache.path)
    answer = client.get("/readyz")
    assert answer.status_code == 503 and "is missing" in answer.json()["problems"][0]


def test_readyz_stays_ready_when_the_cache_cannot_be_written(client, settings):
    temp = settings.cache.path / "tmp"
    shutil.rmtree(temp)
    temp.write_text("a file where the temp directory was")
    answer = client.get("/readyz")
    assert answer.status_code == 200
    assert answer.json()["caching"] is False
    assert answer.json()["caching_off_because"].startswith("cache not writable")


def traffic(client: TestClient) -> None:
    assert client.get("/cf/noarch/p-1.0-0.conda").content == PKG
    for name in ("hidden", "hidden2"):
        got = client.get(f"/{name}/noarch/p-1.0-0.conda", headers={"x-api-key": READ})
        assert got.content == PKG


@pytest.mark.parametrize(
    ("headers", "names_shown"),
    [
        ({}, False),
        ({"authorization": f"Bearer {READ}"}, False),
        ({"authorization": f"Bearer {CF_ADMIN}"}, False),
        ({"authorization": "Bearer not-the-metrics-token"}, False),
        ({"authorization": f"Bearer {METRICS}"}, True),
        ({"authorization": f"Bearer {ADMIN}"}, True),
    ],
    ids=["anonymous", "reader", "channel-admin", "wrong-token", "metrics-token", "admin"],
)
def test_private_channel_names_are_folded_for_scrapers_without_the_token(
    client, headers, names_shown
):
    traffic(client)
    text = client.get("/metrics", headers=headers).text
    outcomes = "condaproxy_cache_outcomes_total"
    assert sample(text, outcomes, channel="cf", outcome="miss") == 1
    if names_shown:
        assert sample(text, outcomes, channel="hidden", outcome="miss") == 1
        assert sample(text, outcomes, channel="hidden2", outcome="miss") == 1
        assert sample(text, outcomes, channel="private") == 0
    else:
        assert "hidden" not in text
        assert sample(text, outcomes, channel="private", outcome="miss") == 2, "folded, summed"
        served = "condaproxy_bytes_served_total"
        assert sample(text, served, channel="private", source="upstream") == 2 * len(PKG)
    assert sample(text, "condaproxy_requests_total", kind="package", status="200") == 3


def test_stats_count_the_private_channels_by_name_for_an_admin(client):
    traffic(client)
    stats = client.get("/api/cache/stats", headers={"x-api-key": ADMIN}).json()["channels"]
    assert stats["hidden"]["misses"] == 1 and stats["hidden"]["files"] == 1
