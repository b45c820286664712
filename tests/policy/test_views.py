"""The policy on every variant a client reads, in process: a record first seen upstream after
the proxy's first sync is hidden from repodata.json, .zst, .bz2, the gzip coding,
current_repodata.json and the CEP-16 index and shards until its cooldown ends, then appears
everywhere at once with new ETags; its download is refused with the release time."""

from __future__ import annotations

import bz2
from pathlib import Path
from typing import Any

import msgspec
import pytest
import respx
import zstandard

from condaproxy.rules.codecs import zstd_decompress
from condaproxy.web.app import create_app
from tests.policy.upstream import DAY, T0, Channel, settings
from tests.support.inproc import Clock, decode_index, running

OLD = "tool-1.0-0.conda"
NEW = "tool-2.0-0.conda"
VARIANTS = [
    "repodata.json",
    "repodata.json.zst",
    "repodata.json.bz2",
    "current_repodata.json",
    "current_repodata.json.zst",
    "repodata.json+gzip",
]


@pytest.fixture
def router():
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mocked:
        yield mocked


async def records_in(client: Any, variant: str) -> dict[str, dict[str, Any]]:
    name, _, coding = variant.partition("+")
    headers = {"accept-encoding": coding or "identity"}
    response = await client.get(f"/cf/noarch/{name}", headers=headers)
    assert response.status_code == 200, (variant, response.text)
    body = response.content
    if name.endswith(".zst"):
        body = zstd_decompress(body)
    elif name.endswith(".bz2"):
        body = bz2.decompress(body)
    document = msgspec.json.decode(body)
    return {**document.get("packages", {}), **document.get("packages.conda", {})}


async def sharded_records(client: Any) -> dict[str, dict[str, Any]]:
    response = await client.get("/cf/noarch/repodata_shards.msgpack.zst")
    assert response.status_code == 200, response.text
    index = decode_index(response.content)
    found: dict[str, dict[str, Any]] = {}
    for digest in index["shards"].values():
        shard = await client.get(f"/cf/noarch/shards/{digest.hex()}.msgpack.zst")
        assert shard.status_code == 200, shard.text
        decoded = msgspec.msgpack.decode(zstandard.ZstdDecompressor().decompress(shard.content))
        found |= {**decoded.get("packages", {}), **decoded.get("packages.conda", {})}
    return found


def old_channel(router: Any) -> tuple[Channel, Clock]:
    """A channel with one month-old record, and the proxy's clock at its first sync."""
    channel = Channel(router)
    channel.add(OLD, timestamp_ms=(T0 - 30 * DAY) * 1000)
    return channel, Clock(T0)


async def test_a_new_version_is_held_in_every_variant_until_its_cooldown_ends(
    tmp_path: Path, router
) -> None:
    channel, clock = old_channel(router)
    async with running(create_app(settings(tmp_path), clock=clock)) as client:
        first = {v: await records_in(client, v) for v in VARIANTS}
        assert all(set(r) == {OLD} for r in first.values())
        stamps = {r[OLD]["indexed_timestamp"] for r in first.values()}
        assert stamps == {int((T0 - 30 * DAY) * 1000)}  # backfilled from the build time
        # Published upstream now, with a build timestamp backdated by a year.
        channel.add(NEW, timestamp_ms=(T0 - 365 * DAY) * 1000)
        clock.now = T0 + 60
        etag = (await client.get("/cf/noarch/repodata.json")).headers["etag"]
        for variant in VARIANTS:
            assert set(await records_in(client, variant)) == {OLD}, variant
        assert set(await sharded_records(client)) == {OLD}
        refused = await client.get(f"/cf/noarch/{NEW}")
        assert refused.status_code == 403
        body = refused.json()
        assert body["rule"] == "cooldown" and body["status"] == 403
        assert body["released_at"] == "2027-01-22T08:01:00Z"  # T0 + 60 s + 7 days
        assert f"noarch/{NEW}" not in channel.fetched  # nothing fetched for a held file
        # A day short of the week: still held.
        clock.now = T0 + 6 * DAY
        assert set(await records_in(client, "repodata.json")) == {OLD}
        # The week is over: it appears everywhere, with one indexed_timestamp and a new ETag.
        clock.now = T0 + 7 * DAY + 61
        after = await client.get("/cf/noarch/repodata.json")
        assert after.headers["etag"] != etag
        for variant in VARIANTS:
            found = await records_in(client, variant)
            assert set(found) == {OLD, NEW}, variant
            assert found[NEW]["indexed_timestamp"] == int((T0 + 60) * 1000)
        sharded = await sharded_records(client)
        assert set(sharded) == {OLD, NEW}
        assert sharded[NEW]["indexed_timestamp"] == int((T0 + 60) * 1000)
        assert (await client.get(f"/cf/noarch/{NEW}")).status_code == 200


async def test_a_restart_does_not_reset_first_seen_and_release_the_hold(
    tmp_path: Path, router
) -> None:
    channel, clock = old_channel(router)
    async with running(create_app(settings(tmp_path), clock=clock)) as client:
        await records_in(client, "repodata.json")
        channel.add(NEW, timestamp_ms=(T0 - 365 * DAY) * 1000)
        clock.now = T0 + 60
        assert set(await records_in(client, "repodata.json")) == {OLD}
    clock.now = T0 + DAY
    async with running(create_app(settings(tmp_path), clock=clock)) as client:
        assert set(await records_in(client, "repodata.json")) == {OLD}
        assert (await client.get(f"/cf/noarch/{NEW}")).status_code == 403


async def test_denied_sha256_is_never_served_and_exemptions_release_at_once(
    tmp_path: Path, router
) -> None:
    channel = Channel(router)
    bad = channel.add("evil-1.0-0.conda", timestamp_ms=(T0 - 30 * DAY) * 1000)
    channel.add("openssl-3.0-0.conda", timestamp_ms=(T0 - 30 * DAY) * 1000)
    import hashlib

    sha = hashlib.sha256(bad).hexdigest()
    config = settings(tmp_path, deny=(f"evil[sha256={sha}]",), exempt={"openssl": "0"})
    clock = Clock(T0)
    async with running(create_app(config, clock=clock)) as client:
        assert set(await records_in(client, "repodata.json")) == {"openssl-3.0-0.conda"}
        channel.add("openssl-3.1-0.conda")
        clock.now = T0 + 10
        for variant in VARIANTS:
            found = set(await records_in(client, variant))
            assert found == {"openssl-3.0-0.conda", "openssl-3.1-0.conda"}, variant
        assert set(await sharded_records(client)) == found
        refused = await client.get("/cf/noarch/evil-1.0-0.conda")
        assert refused.status_code == 403 and refused.json()["rule"] == "deny"
        assert "released_at" not in refused.json()
        assert "noarch/evil-1.0-0.conda" not in channel.fetched


async def test_a_filtered_view_is_as_fresh_as_the_upstream_copy_it_came_from(
    tmp_path: Path, router
) -> None:
    channel, clock = old_channel(router)
    config = settings(tmp_path)
    config = msgspec.structs.replace(
        config, cache=msgspec.structs.replace(config.cache, repodata_ttl=60)
    )
    async with running(create_app(config, clock=clock)) as client:
        for name in ("repodata.json", "repodata.json.zst"):
            first = await client.get(f"/cf/noarch/{name}")
            assert first.headers["cache-control"] == "public, max-age=60"
        clock.now = T0 + 45
        later = await client.get("/cf/noarch/repodata.json.zst")
        assert later.headers["cache-control"] == "public, max-age=15"
        assert channel.fetched.count("noarch/repodata.json.zst") == 1
