"""Operators see the policy: /api/policy and /api/policy/<channel>/held with an admin token,
metrics by rule kind; nobody else sees them."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import respx

from condaproxy.web.app import create_app
from tests.policy.upstream import DAY, T0, Channel, settings
from tests.support.inproc import Clock, running, sample, token

ADMIN = "admin-token-123"
READER = "reader-token-123"


@pytest.fixture
def router():
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mocked:
        yield mocked


def with_tokens(tmp_path: Path, **policy: object):  # type: ignore[no-untyped-def]
    config = settings(tmp_path, **policy)
    tokens = {
        t.name: t for t in (token("ops", ADMIN, star="admin"), token("ci", READER, star="read"))
    }
    return msgspec.structs.replace(config, tokens=tokens)


async def test_operators_see_the_rules_and_every_held_record(tmp_path: Path, router) -> None:
    channel = Channel(router)
    channel.add("tool-1.0-0.conda", timestamp_ms=(T0 - 30 * DAY) * 1000)
    channel.add("evil-1.0-0.conda", timestamp_ms=(T0 - 30 * DAY) * 1000)
    clock = Clock(T0)
    config = with_tokens(tmp_path, deny=("evil",))
    async with running(create_app(config, clock=clock)) as client:
        await client.get("/cf/noarch/repodata.json")
        channel.add("tool-2.0-0.conda")
        clock.now = T0 + 100
        await client.get("/cf/noarch/repodata.json")
        effective = await client.get("/api/policy", headers={"x-api-key": ADMIN})
        assert effective.status_code == 200
        assert effective.json()["cooldown"] == "7d" and effective.json()["deny"] == ["evil"]
        assert effective.json()["active_channels"] == ["cf"]
        held = await client.get("/api/policy/cf/held", headers={"x-api-key": ADMIN})
        assert held.status_code == 200
        items = {i["filename"]: i for i in held.json()["held"]}
        assert set(items) == {"evil-1.0-0.conda", "tool-2.0-0.conda"}
        assert items["evil-1.0-0.conda"]["rule"] == "deny"
        assert items["tool-2.0-0.conda"] | {} == {
            "subdir": "noarch",
            "label": None,
            "filename": "tool-2.0-0.conda",
            "name": "tool",
            "version": "2.0",
            "rule": "cooldown",
            "spec": "policy.cooldown = 7d",
            "released_at": "2027-01-22T08:01:40Z",
        }
        assert (await client.get("/cf/noarch/evil-1.0-0.conda")).status_code == 403
        exposition = (await client.get("/metrics")).text
        assert sample(exposition, "condaproxy_policy_refused_total", rule="deny") == 1
        assert sample(exposition, "condaproxy_policy_held_records", rule="cooldown") == 1


@pytest.mark.parametrize("path", ["/api/policy", "/api/policy/cf/held"])
@pytest.mark.parametrize("key", [None, READER, "wrong-token-123"])
async def test_policy_api_needs_an_admin_token(
    tmp_path: Path, router, path: str, key: str | None
) -> None:
    Channel(router)
    headers = {"x-api-key": key} if key else {}
    async with running(create_app(with_tokens(tmp_path), clock=Clock(T0))) as client:
        response = await client.get(path, headers=headers)
    assert response.status_code in (401, 403) and response.json()["status"] in (401, 403)


async def test_a_purge_does_not_reset_first_seen_and_release_the_hold(
    tmp_path: Path, router
) -> None:
    channel = Channel(router)
    channel.add("tool-1.0-0.conda", timestamp_ms=(T0 - 30 * DAY) * 1000)
    clock = Clock(T0)
    async with running(create_app(with_tokens(tmp_path), clock=clock)) as client:
        await client.get("/cf/noarch/repodata.json")
        channel.add("tool-2.0-0.conda", timestamp_ms=(T0 - 400 * DAY) * 1000)
        clock.now = T0 + 60
        await client.get("/cf/noarch/repodata.json")
        for scope in ("/api/cache/cf", "/api/cache"):
            purged = await client.delete(scope, headers={"x-api-key": ADMIN})
            assert purged.status_code == 200, purged.text
            listed = msgspec.json.decode((await client.get("/cf/noarch/repodata.json")).content)
            assert set(listed["packages.conda"]) == {"tool-1.0-0.conda"}
            assert (await client.get("/cf/noarch/tool-2.0-0.conda")).status_code == 403


async def test_the_status_page_shows_each_channels_policy_and_what_it_holds(
    tmp_path: Path, router
) -> None:
    channel = Channel(router)
    channel.add("tool-1.0-0.conda", timestamp_ms=(T0 - 30 * DAY) * 1000)
    channel.add("evil-1.0-0.conda", timestamp_ms=(T0 - 30 * DAY) * 1000)
    clock = Clock(T0)
    async with running(create_app(with_tokens(tmp_path, deny=("evil",)), clock=clock)) as client:
        await client.get("/cf/noarch/repodata.json")
        channel.add("tool-2.0-0.conda")
        clock.now = T0 + 100
        await client.get("/cf/noarch/repodata.json")
        data = (await client.get("/", headers={"accept": "application/json"})).json()
        page = (await client.get("/")).text
    (cf,) = [c for c in data["channels"] if c["name"] == "cf"]
    assert cf["policy"] == {
        "cooldown": "7d",
        "deny_rules": 1,
        "allow_rules": 0,
        "held": {"deny": 1, "cooldown": 1, "allow": 0},
    }
    assert "policy: cooldown 7d, 1 deny rules, 2 held" in page
