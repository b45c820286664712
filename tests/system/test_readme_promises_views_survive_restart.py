"""README "Configuration": cached metadata "(repodata variants, shard indexes, merged views): a
copy from before the process started is checked against its sha256 once, before it is served;
one that fails is dropped and fetched again".

Merged views (uploads over upstream) and the supply-chain policy's filtered views are named
after their inputs, not their content, and the check compared the file's content hash with that
name: every such view failed it at every start, was logged as "cached metadata damaged on disk"
(an error) and built again, the policy's for a big channel at seconds and most of a GB each.
Each variant now records its content's sha256 when its name is not it; an intact view is served
after a restart as it was, and a damaged one is still dropped."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package

pytestmark = pytest.mark.integration

WRITER = "views-writer-token-1"
UPLOAD = Pkg("mytool", "1.0", "h0", "linux-64")
# Each path is served from a view named after its inputs: merged (uploads), policy (cooldown,
# exemption), both, and the same as a shard index.
PATHS = [
    "team/linux-64/repodata.json",
    "team/noarch/repodata.json",
    "held/linux-64/repodata.json",
    "held/noarch/repodata.json",
    "both/linux-64/repodata.json",
    "both/linux-64/repodata_shards.msgpack.zst",
    "held/linux-64/repodata_shards.msgpack.zst",
]
POLICY = '[policy]\ncooldown = "7d"\n[policy.exempt]\n"pyutil" = "0"\n'


def damaged(proxy) -> list[dict]:  # type: ignore[no-untyped-def]
    return [e for e in proxy.events() if "damaged" in str(e.get("event", ""))]


def test_intact_views_are_served_after_a_restart_as_they_were(
    start_proxy, upstream, tmp_path: Path
) -> None:
    channels = {
        "team": {"upstream": upstream.url},
        "held": {"upstream": upstream.url},
        "both": {"upstream": upstream.url},
    }
    tokens = {"ci": {"token": WRITER, "roles": {"team": "write", "both": "write"}}}
    cache = tmp_path / "cache"
    first = start_proxy(channels, cache=cache, tokens=tokens, extra=POLICY)
    package = build_package(UPLOAD, tmp_path / "work", tmp_path / "built")
    for channel in ("team", "both"):
        with package.open("rb") as f:
            answer = httpx.post(
                f"{first.url}/api/channels/{channel}/files",
                files={"files": (package.name, f)},
                headers={"x-api-key": WRITER},
                timeout=30,
            )
        assert answer.status_code == 201, answer.text
    before = {}
    for path in PATHS:
        answer = httpx.get(f"{first.url}/{path}", timeout=30)
        assert answer.status_code == 200, (path, answer.text)
        before[path] = (answer.headers["etag"], answer.content)
    first.stop()

    second = start_proxy(channels, cache=cache, tokens=tokens, extra=POLICY)
    for path in PATHS:
        answer = httpx.get(f"{second.url}/{path}", timeout=30)
        assert answer.status_code == 200, (path, answer.text)
        assert (answer.headers["etag"], answer.content) == before[path], path
        assert answer.headers["x-cache"] == "HIT", path
    assert damaged(second) == []


def test_a_damaged_view_is_still_dropped_and_made_again(
    start_proxy, upstream, tmp_path: Path
) -> None:
    channels = {"held": {"upstream": upstream.url}}
    cache = tmp_path / "cache"
    first = start_proxy(channels, cache=cache, extra=POLICY)
    answer = httpx.get(f"{first.url}/held/noarch/repodata.json", timeout=30)
    assert answer.status_code == 200
    good = answer.content
    first.stop()
    # Flip a byte of every file of every policy view (same size: only the hash can tell).
    flipped = 0
    for root, _, files in os.walk(cache / "meta"):
        for name in files:
            path = Path(root) / name
            data = bytearray(path.read_bytes())
            if data and len(data) == len(good) and bytes(data) == good:
                data[len(data) // 2] ^= 0x01
                path.write_bytes(bytes(data))
                os.utime(path, (1_000_000_000, 1_000_000_000))  # from long before the start
                flipped += 1
    assert flipped >= 1, "the test found no stored JSON view to damage"
    second = start_proxy(channels, cache=cache, extra=POLICY)
    answer = httpx.get(f"{second.url}/held/noarch/repodata.json", timeout=30)
    assert answer.status_code == 200 and answer.content == good
    assert damaged(second), "a damaged view was served without being noticed"
