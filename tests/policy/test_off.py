"""With no policy (the default) nothing changes: no policy object on the request path, no
filtered views, no first-seen files; a channel the policy does not touch is served as before."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import respx

from condaproxy.settings import ChannelSettings, PolicySettings
from condaproxy.storage.keys import MetaKind
from condaproxy.web.app import create_app
from tests.policy.upstream import DAY, T0, UP, Channel, settings
from tests.support.inproc import Clock, running, services_of


@pytest.fixture
def router():
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mocked:
        yield mocked


async def test_no_policy_means_no_extra_work(tmp_path: Path, router) -> None:
    channel = Channel(router)
    channel.add("tool-1.0-0.conda", timestamp_ms=(T0 - 30 * DAY) * 1000)
    app = create_app(settings(tmp_path, cooldown=0), clock=Clock(T0))
    async with running(app) as client:
        services = services_of(app)
        assert services.proxy.policing is None
        for path in ("repodata.json", "repodata_shards.msgpack.zst", "tool-1.0-0.conda"):
            assert (await client.get(f"/cf/noarch/{path}")).status_code == 200
        document = msgspec.json.decode((await client.get("/cf/noarch/repodata.json")).content)
        assert "indexed_timestamp" not in document["packages.conda"]["tool-1.0-0.conda"]
        kinds = {key.kind for key, _ in services.index.iter_meta()}
        assert not kinds & {MetaKind.POLICY, MetaKind.POLICY_SHARDS}
    assert not (tmp_path / "cache" / "policy").exists()


async def test_a_channel_outside_the_policy_is_served_as_before(tmp_path: Path, router) -> None:
    Channel(router).add("tool-1.0-0.conda")
    base = settings(tmp_path, cooldown=0)
    channels = {
        "cf": ChannelSettings("cf", UP, cooldown="1d"),
        "plain": ChannelSettings("plain", UP),
    }
    config = msgspec.structs.replace(base, channels=channels, policy=PolicySettings())
    app = create_app(config, clock=Clock(T0))
    async with running(app) as client:
        assert (await client.get("/plain/noarch/repodata.json")).status_code == 200
        policing = services_of(app).proxy.policing
        assert policing is not None and policing.active("cf") and not policing.active("plain")
        kinds = {key.kind for key, _ in services_of(app).index.iter_meta()}
        assert MetaKind.POLICY not in kinds
