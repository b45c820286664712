"""Attacks on the supply-chain policy: asking for a held or denied file by URL, through every
route a client can spell (plain, /t/<token>/, labels, percent-encoded, HEAD), reading an
upstream shard the policy's own index does not name, guessing the URL of a file uploaded
upstream after the last sync, and publishing a denied package through the proxy's own uploads.
Each is a 403 naming the rule, with nothing fetched upstream."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import respx

from condaproxy.web.app import create_app
from tests.policy.upstream import DAY, T0, Channel, settings
from tests.support.channel import Pkg
from tests.support.inproc import Clock, built, decode_index, running, services_of, token, until

READ = "reader-token-1234"
WRITE = "writer-token-1234"
HELD = "tool-2.0-0.conda"


@pytest.fixture
def router():
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mocked:
        yield mocked


def config(tmp_path: Path, **policy: object):  # type: ignore[no-untyped-def]
    base = settings(tmp_path, **policy)
    tokens = {t.name: t for t in (token("r", READ, star="read"), token("w", WRITE, star="write"))}
    return msgspec.structs.replace(base, tokens=tokens)


ROUTES = {
    "plain": "/cf/noarch/{f}",
    "path-token": f"/t/{READ}/cf/noarch/{{f}}",
    "label": "/cf/label/dev/noarch/{f}",
    "label-path-token": f"/t/{READ}/cf/label/dev/noarch/{{f}}",
    "percent-encoded": "/cf/noarch/{e}",
}


def spelled(route: str, filename: str) -> str:
    encoded = "".join(f"%{ord(c):02X}" if c in "-." else c for c in filename)
    return ROUTES[route].format(f=filename, e=encoded)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_a_held_file_cannot_be_fetched_by_url_on_any_route(
    tmp_path: Path, router, route: str, method: str
) -> None:
    channel = Channel(router)
    channel.add("tool-1.0-0.conda", timestamp_ms=(T0 - 30 * DAY) * 1000)
    clock = Clock(T0)
    async with running(create_app(config(tmp_path), clock=clock)) as client:
        await client.get(spelled(route, "repodata.json"))  # the first sync
        channel.add(HELD, timestamp_ms=(T0 - 400 * DAY) * 1000)  # backdated build time
        clock.now = T0 + 3600
        response = await client.request(method, spelled(route, HELD))
        assert response.status_code == 403
        if method == "GET":
            assert response.json()["rule"] == "cooldown"
            assert response.json()["released_at"] == "2027-01-22T09:00:00Z"
        assert not any(p.endswith(HELD) for p in channel.fetched)


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_a_denied_sha256_cannot_be_fetched_on_any_route(
    tmp_path: Path, router, route: str
) -> None:
    channel = Channel(router)
    data = channel.add("evil-1.0-0.conda", timestamp_ms=(T0 - 30 * DAY) * 1000)
    sha = hashlib.sha256(data).hexdigest()
    async with running(
        create_app(config(tmp_path, deny=(f"*[sha256={sha}]",)), clock=Clock(T0))
    ) as client:
        response = await client.get(spelled(route, "evil-1.0-0.conda"))
        assert response.status_code == 403 and response.json()["rule"] == "deny"
        assert not any(p.endswith("evil-1.0-0.conda") for p in channel.fetched)


async def test_a_file_uploaded_upstream_after_the_last_sync_cannot_be_guessed(
    tmp_path: Path, router
) -> None:
    channel = Channel(router)
    channel.add("tool-1.0-0.conda", timestamp_ms=(T0 - 30 * DAY) * 1000)
    clock = Clock(T0)
    settings_ = msgspec.structs.replace(
        config(tmp_path), cache=msgspec.structs.replace(config(tmp_path).cache, repodata_ttl=3600)
    )
    async with running(create_app(settings_, clock=clock)) as client:
        await client.get("/cf/noarch/repodata.json")
        channel.add(HELD)  # listed upstream, but the proxy's copy is still fresh
        response = await client.get(f"/cf/noarch/{HELD}")
        assert response.status_code == 403 and response.json()["rule"] == "cooldown"
        assert f"noarch/{HELD}" not in channel.fetched


async def test_an_upstream_shard_holding_a_hidden_record_is_refused(tmp_path: Path, router) -> None:
    channel = Channel(router)
    channel.add("tool-1.0-0.conda", timestamp_ms=(T0 - 30 * DAY) * 1000)
    clock = Clock(T0)
    async with running(create_app(config(tmp_path), clock=clock)) as client:
        ours = decode_index((await client.get("/cf/noarch/repodata_shards.msgpack.zst")).content)
        channel.add(HELD)
        clock.now = T0 + 60
        upstream_shard = channel._shards()["tool"]  # the upstream's shard lists tool 2.0
        digest = hashlib.sha256(upstream_shard).hexdigest()
        for route in ("/cf/noarch/shards/{}", f"/t/{READ}/cf/noarch/shards/{{}}"):
            response = await client.get(route.format(f"{digest}.msgpack.zst"))
            assert response.status_code == 403 and response.json()["rule"] == "view"
        assert not any(p.startswith("noarch/shards/") for p in channel.fetched)
        # The proxy's own shards are served.
        for sha in ours["shards"].values():
            assert (await client.get(f"/cf/noarch/shards/{sha.hex()}.msgpack.zst")).is_success


async def test_an_upload_matching_a_deny_rule_is_never_served(tmp_path: Path, router) -> None:
    Channel(router)
    packages = built(
        tmp_path,
        Pkg("evil", "1.0", "0", "noarch"),
        Pkg("fresh", "1.0", "0", "noarch"),
    )
    async with running(create_app(config(tmp_path, deny=("evil",)), clock=Clock(T0))) as client:
        for filename, data in packages.items():
            stored = await client.post(
                f"/api/channels/cf/upload/{filename}", content=data, headers={"x-api-key": WRITE}
            )
            assert stored.status_code in (200, 201), stored.text
        listed = msgspec.json.decode((await client.get("/cf/noarch/repodata.json")).content)
        # Uploads are the operator's own: no cooldown, but the deny list applies.
        assert set(listed["packages.conda"]) == {"fresh-1.0-0.conda"}
        assert (await client.get("/cf/noarch/fresh-1.0-0.conda")).status_code == 200
        refused = await client.get("/cf/noarch/evil-1.0-0.conda")
        assert refused.status_code == 403 and refused.json()["rule"] == "deny"
        index = decode_index((await client.get("/cf/noarch/repodata_shards.msgpack.zst")).content)
        assert set(index["shards"]) == {"fresh"}


async def test_prefetch_cannot_warm_a_held_file(tmp_path: Path, router) -> None:
    channel = Channel(router)
    channel.add("tool-1.0-0.conda", timestamp_ms=(T0 - 30 * DAY) * 1000)
    clock = Clock(T0)
    base = config(tmp_path)
    admin = token("ops", "admin-token-1234", star="admin")
    app = create_app(
        msgspec.structs.replace(base, tokens={**base.tokens, "ops": admin}), clock=clock
    )
    async with running(app) as client:
        await client.get("/cf/noarch/repodata.json")
        channel.add(HELD)
        clock.now = T0 + 60
        asked = await client.post(
            "/api/cache/cf/noarch/prefetch",
            json=[HELD],
            headers={"x-api-key": "admin-token-1234"},
        )
        if asked.status_code == 202:
            job = asked.json()["id"]
            prefetcher = services_of(app).prefetcher

            def state() -> dict:
                return next(j for j in prefetcher.jobs() if j["id"] == job)

            await until(lambda: state()["state"] in ("done", "failed"))
            assert state()["state"] == "failed", state()
            assert "cooldown" in str(state()["failures"]) + str(state()["error"]), state()
        else:
            assert asked.status_code in (400, 403), asked.text
        assert f"noarch/{HELD}" not in channel.fetched


async def test_a_fresh_label_does_not_backfill_a_new_file_from_its_build_time(
    tmp_path: Path, router
) -> None:
    channel = Channel(router)
    channel.add("tool-1.0-0.conda", timestamp_ms=(T0 - 30 * DAY) * 1000)
    clock = Clock(T0)
    async with running(create_app(config(tmp_path), clock=clock)) as client:
        await client.get("/cf/noarch/repodata.json")  # the channel's first sync
        channel.add(HELD, timestamp_ms=(T0 - 400 * DAY) * 1000)
        clock.now = T0 + 60
        # A label nobody asked for before: its first read must not count as a first sync.
        listed = msgspec.json.decode(
            (await client.get("/cf/label/fresh/noarch/repodata.json")).content
        )
        assert set(listed["packages.conda"]) == {"tool-1.0-0.conda"}
        response = await client.get(f"/cf/label/other/noarch/{HELD}")
        assert response.status_code == 403 and response.json()["rule"] == "cooldown"


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('[policy]\ncooldown = "7 days"\n', "'policy.cooldown'"),
        ('[policy]\ncooldown = "-7d"\n', "'policy.cooldown'"),
        ('[policy]\ndeny = ["numpy (>=1"]\n', "'policy.deny'"),
        ('[policy.exempt]\n"python 3.13.*" = "P1M"\n', "'policy.exempt.\"python 3.13.*\"'"),
    ],
)
def test_a_half_understood_policy_never_serves(tmp_path: Path, body: str, key: str) -> None:
    """The proxy refuses to start (exit 2, one line naming the key, no traceback)."""
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[cache]\npath = "{tmp_path / "cache"}"\n{body}'
        '[channels.cf]\nupstream = "https://up.example/cf"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "condaproxy", "serve", "--config", str(config), "--port", "1"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert key in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_a_delisted_file_denied_by_checksum_is_not_fetched_unchecked(
    tmp_path: Path, router
) -> None:
    """Deny rules only (no cooldown): the upstream drops the bad file from its listing but
    still serves it, and a lock file asks for it by URL."""
    channel = Channel(router)
    data = channel.add("evil-1.0-0.conda", timestamp_ms=(T0 - 30 * DAY) * 1000)
    channel.add("fine-1.0-0.conda", timestamp_ms=(T0 - 30 * DAY) * 1000)
    sha = hashlib.sha256(data).hexdigest()
    del channel.records["evil-1.0-0.conda"]
    config_ = config(tmp_path, cooldown=0, deny=(f"evil[sha256={sha}]",))
    async with running(create_app(config_, clock=Clock(T0))) as client:
        refused = await client.get("/cf/noarch/evil-1.0-0.conda")
        assert refused.status_code == 403 and refused.json()["rule"] == "deny"
        assert "noarch/evil-1.0-0.conda" not in channel.fetched
        channel.files["fine-2.0-0.conda"] = b"unlisted but not named by any rule"
        assert (await client.get("/cf/noarch/fine-2.0-0.conda")).status_code == 200
