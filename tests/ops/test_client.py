"""The admin API's command-line client against the in-process app (tests/support/bridge.py):
what each call sends and returns, and how refusals and unreachable proxies are reported."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx
from starlette.testclient import TestClient

from condaproxy.ops.client import AdminClient, ClientError, follow_prefetch, print_json
from condaproxy.settings import ChannelSettings
from condaproxy.web.app import create_app
from tests.support.bridge import URL, bridge
from tests.support.inproc import Clock, make_settings, token, upstream_subdir

UP = "https://up.example/cf"
ADMIN = "admin-token-0001"
FILES = {"alpha-1.0-0.conda": b"a" * 400, "beta-1.0-0.conda": b"b" * 300}


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mocked:
        upstream_subdir(mocked, UP, "linux-64", FILES)
        yield mocked


@pytest.fixture
def proxy(tmp_path: Path, router) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path / "cache", [ChannelSettings("cf", UP)], [token("ops", ADMIN, star="admin")]
    )
    with TestClient(create_app(settings, clock=Clock())) as app:
        bridge(router, app)
        yield app


@pytest.fixture
def client(proxy) -> Iterator[AdminClient]:
    admin = AdminClient(URL + "/", ADMIN, timeout=10)
    yield admin
    admin.close()


def test_stats_and_purges_reach_the_api_with_the_token_as_a_bearer_header(client, proxy, router):
    proxy.get("/cf/linux-64/alpha-1.0-0.conda")
    assert client.stats()["channels"]["cf"]["misses"] == 1
    one = client.purge("/cf/linux-64/", None, False)
    assert one["scope"] == {"channel": "cf", "subdir": "linux-64"}
    everything = client.purge("", "alpha", True)
    assert everything["scope"] == {"package": "alpha", "metadata_only": True}
    sent = [c.request for c in router.calls if c.request.url.host == "proxy.test"]
    assert all(r.headers["authorization"] == f"Bearer {ADMIN}" for r in sent)
    assert all(ADMIN not in str(r.url) for r in sent), "the token never travels in a URL"


def test_a_prefetch_is_followed_until_it_is_done(client):
    job = client.prefetch("cf", "linux-64", list(FILES), False)
    assert job["state"] == "resolving"
    done = follow_prefetch(client, job, poll=0.01)
    assert (done["state"], done["fetched"]) == ("done", 2)
    assert client.job(job["id"])["state"] == "done"
    assert client.job("no-such-job") is None


def test_a_job_that_disappears_is_reported_lost(client):
    assert follow_prefetch(client, {"id": "gone", "state": "fetching"}, poll=0)["state"] == "lost"


def test_a_refusal_is_a_client_error_with_the_status_and_the_proxys_words(proxy):
    stranger = AdminClient(URL, "not-a-token-0000")
    with pytest.raises(ClientError, match="HTTP 401: unknown token"):
        stranger.stats()
    anonymous = AdminClient(URL, None)
    with pytest.raises(ClientError, match="HTTP 404: unknown channel"):
        anonymous.purge("nowhere", None, False)


def test_an_answer_that_is_not_json_is_quoted(router):
    router.get("http://broken.test/api/cache/stats").respond(502, text="<html>bad gateway</html>")
    with pytest.raises(ClientError, match="HTTP 502: <html>bad gateway</html>"):
        AdminClient("http://broken.test", ADMIN).stats()


def test_an_unreachable_proxy_is_named(router):
    router.get("http://down.test/api/cache/stats").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(ClientError, match=r"cannot reach http://down\.test: ConnectError"):
        AdminClient("http://down.test", ADMIN).stats()


def test_json_is_printed_sorted_and_indented(capsys):
    print_json({"b": 1, "a": [1]})
    assert capsys.readouterr().out == '{\n  "a": [\n    1\n  ],\n  "b": 1\n}\n'
