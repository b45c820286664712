"""End to end (issue 13): py-rattler solves through the proxy from a real local upstream, with
and without shards. A version published upstream after the proxy's first sync (its build
timestamp years old) is not chosen during its cooldown and is chosen after it; an exempted
name is installable at once; a denied sha256 never resolves and its URL is a 403. The proxy's
policy clock is moved with the test-only `policy.test_clock_file`, not by sleeping."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import msgpack
import msgspec
import pytest

from condaproxy.rules.codecs import zstd_decompress
from tests.support.channel import Pkg, build_channel, build_package, index_channel
from tests.support.clients import rattler_install
from tests.support.processes import Upstream

pytestmark = pytest.mark.e2e
DAY = 86400
FIRST = (
    Pkg("pytool", "1.0", "0", "noarch"),
    Pkg("openssl", "3.0", "0", "noarch"),
    Pkg("evil", "1.0", "0", "noarch"),
)
LATER = (Pkg("pytool", "2.0", "0", "noarch"), Pkg("openssl", "3.1", "0", "noarch"))


def versions(result: dict) -> dict[str, str]:
    assert result["ok"], result.get("trace")
    return {r["name"]: r["version"] for r in result["records"]}


def stamps_everywhere(channel: str, filename: str) -> set[object]:
    """indexed_timestamp of `filename` in repodata.json, .zst and its shard."""
    found = set()
    plain = msgspec.json.decode(httpx.get(f"{channel}/noarch/repodata.json").content)
    found.add(plain["packages.conda"][filename].get("indexed_timestamp"))
    packed = httpx.get(f"{channel}/noarch/repodata.json.zst").content
    found.add(
        msgspec.json.decode(zstd_decompress(packed))["packages.conda"][filename].get(
            "indexed_timestamp"
        )
    )
    index = msgpack.unpackb(
        zstd_decompress(httpx.get(f"{channel}/noarch/repodata_shards.msgpack.zst").content)
    )
    name = filename.rsplit("-", 2)[0]
    shard_url = f"{channel}/noarch/shards/{index['shards'][name].hex()}.msgpack.zst"
    shard = msgpack.unpackb(zstd_decompress(httpx.get(shard_url).content))
    found.add(shard["packages.conda"][filename].get("indexed_timestamp"))
    return found


@pytest.mark.parametrize(
    ("sharded", "workers"),
    [(True, 1), (False, 1), (True, 2)],
    ids=["shards", "repodata-json", "shards-2-workers"],
)
def test_cooldown_exemption_and_deny_hold_for_a_real_client(
    start_proxy, tmp_path: Path, sharded: bool, workers: int
) -> None:
    root = build_channel(tmp_path / "channel", tmp_path / "work", FIRST)
    evil_sha = hashlib.sha256((root / "noarch" / "evil-1.0-0.conda").read_bytes()).hexdigest()
    clock_file = tmp_path / "clock-offset"
    # rattler-index stamps indexed_timestamp with the time it ran (CEP 47), and the proxy
    # trusts it: its clock starts a month on, so the first packages are a month old.
    clock_file.write_text(str(30 * DAY))
    upstream = Upstream(root).start()
    try:
        policy = (
            f'[policy]\ncooldown = "7d"\ndeny = ["evil[sha256={evil_sha}]"]\n'
            f'test_clock_file = "{clock_file}"\n[policy.exempt]\n"openssl" = "0"\n'
        )
        proxy = start_proxy(
            {"local": {"upstream": upstream.url}}, ttl=0, extra=policy, workers=workers
        )
        channel = f"{proxy.url}/local"
        # The first sync: everything already published is served (backfilled times).
        first = versions(rattler_install(channel, tmp_path / "a", sharded, "pytool", "openssl"))
        assert first == {"pytool": "1.0", "openssl": "3.0"}
        # Published upstream now; their build timestamps say 2023 (backdated).
        for pkg in LATER:
            build_package(pkg, tmp_path / "work", root)
        index_channel(root)
        held = versions(rattler_install(channel, tmp_path / "b", sharded, "pytool", "openssl"))
        assert held == {"pytool": "1.0", "openssl": "3.1"}  # openssl is exempt
        direct = httpx.get(f"{channel}/noarch/pytool-2.0-0.conda")
        assert direct.status_code == 403 and direct.json()["rule"] == "cooldown"
        denied = rattler_install(channel, tmp_path / "c", sharded, "evil")
        assert not denied["ok"]
        refused = httpx.get(f"{channel}/noarch/evil-1.0-0.conda")
        assert refused.status_code == 403 and refused.json()["rule"] == "deny"
        assert upstream.stats().get("GET /noarch/evil-1.0-0.conda") is None
        # The access log and an audit event say why.
        audits = proxy.events_where(
            lambda e: e.get("action") == "policy-refused" and e.get("rule") == "deny"
        )
        assert audits and audits[0]["target"] == "local/noarch/evil-1.0-0.conda"
        access = proxy.events_where(
            lambda e: e.get("event") == "request" and e.get("status") == 403
        )
        assert any("policy.deny" in str(e.get("error")) for e in access), access
        assert upstream.stats().get("GET /noarch/pytool-2.0-0.conda") is None
        # Eight days later on the proxy's policy clock, the hold is over.
        clock_file.write_text(str(38 * DAY))
        after = versions(rattler_install(channel, tmp_path / "d", sharded, "pytool"))
        assert after == {"pytool": "2.0"}
        stamps = stamps_everywhere(channel, "pytool-2.0-0.conda")
        assert len(stamps) == 1 and isinstance(stamps.pop(), int)
        assert httpx.get(f"{channel}/noarch/evil-1.0-0.conda").status_code == 403
    finally:
        upstream.stop()
