"""A big `repodata.json.zst` (over 1 MiB, as every conda-forge subdir's is) is decompressed
while it downloads (cache/inflating.py), not after. The same hostile bodies the small path
refuses must be refused here, and nothing of them kept: the previous snapshot is served
(stale) or, with `refresh_passthrough`, the follower's transfer never completes; no
decompressed temp file is left behind; the next good body is adopted whole.

Real processes: the test upstream serves each body in place of the channel's `.zst`; the
proxy revalidates on every request (ttl 0).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path

import httpx
import pytest
import zstandard

from tests.cache.test_passthrough import new_snapshot
from tests.support.hostile import no_crash_in_log
from tests.support.processes import Proxy, Upstream

pytestmark = pytest.mark.integration

ZST = "/linux-64/repodata.json.zst"
MiB = 1 << 20
LIMIT = 'max_repodata_size = "8MiB"\n'


def padding(n: int) -> str:
    """n characters of incompressible text (base64 of random bytes)."""
    return base64.b64encode(os.urandom(n * 3 // 4)).decode()[:n]


def big_document(channel_dir: Path, extra: dict[str, object] | None = None) -> dict:
    """The channel's linux-64 repodata with one more record carrying 2 MiB of incompressible
    text: its .zst is about 1.5 MiB, past the size from which the proxy inflates early."""
    return json.loads(unzstd(new_snapshot(channel_dir, extra, pad=2 * MiB)))


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


def unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def refused_bodies(channel_dir: Path) -> dict[str, tuple[bytes, dict[str, object]]]:
    good_json = json.dumps(big_document(channel_dir)).encode()
    good = zst(good_json)
    other = big_document(channel_dir, {"info": {"subdir": "osx-64"}})
    bodies: dict[str, tuple[bytes, dict[str, object]]] = {
        "not json": (zst(b"<html>" + padding(2 * MiB).encode() + b"</html>"), {}),
        "not a repodata document": (
            zst(json.dumps({"packages": [], "pad": padding(2 * MiB)}).encode()),
            {},
        ),
        "another subdir's repodata": (zst(json.dumps(other).encode()), {}),
        "not zstd": (os.urandom(2 * MiB), {}),
        "zstd that goes bad after the first MiB": (
            good[: MiB + 4096] + os.urandom(len(good) - MiB - 4096),
            {},
        ),
        "larger than max_repodata_size once decompressed": (
            zst(b'{"packages": {"x": "' + padding(10 * MiB).encode() + b'"}}'),
            {},
        ),
        "JSON broken only at its very end": (zst(good_json[:-1] + b","), {}),
        "bytes after the last frame": (good + b"trailing garbage", {}),
        "a second frame cut short": (good + good[: len(good) // 2], {}),
        "cut midway": (good, {"break_after": len(good) // 2 + MiB // 2}),
        "longer than its Content-Length says": (good, {"headers": {"content-length": "100"}}),
    }
    for name, (body, _) in bodies.items():
        assert len(body) > MiB or name == "longer than its Content-Length says", name
    return bodies


CASES = [
    "not json",
    "not a repodata document",
    "another subdir's repodata",
    "not zstd",
    "zstd that goes bad after the first MiB",
    "larger than max_repodata_size once decompressed",
    "JSON broken only at its very end",
    "bytes after the last frame",
    "a second frame cut short",
    "cut midway",
    "longer than its Content-Length says",
]


def leftovers(cache: Path) -> list[str]:
    """Temp files a refresh left in the cache directory."""
    return sorted(str(p) for p in cache.rglob("*.partial"))


def cache_dir(proxy: Proxy) -> Path:
    text = proxy.config.read_text()
    return Path(text.split('path = "', 1)[1].split('"', 1)[0])


def settled(cache: Path, timeout: float = 10.0) -> list[str]:
    """Leftover temp files once background work has had time to finish."""
    deadline = time.monotonic() + timeout
    while (left := leftovers(cache)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_a_big_snapshot_is_adopted_as_the_upstream_sent_it(
    start_proxy, upstream: Upstream, channel_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    proxy = start_proxy({"ch": {"upstream": upstream.url}}, ttl=0, extra=LIMIT)
    body = zst(json.dumps(big_document(channel_dir)).encode())
    upstream.override(ZST, body)
    got = httpx.get(proxy.url + "/ch" + ZST, timeout=30)
    assert got.status_code == 200
    assert got.content == body, "the upstream's own .zst passes through, byte for byte"
    etag = got.headers.get("etag", "")
    assert hashlib.sha256(body).hexdigest()[:40] in etag, "the snapshot is named by its bytes"
    assert httpx.get(proxy.url + "/ch" + ZST, headers={"if-none-match": etag}).status_code == 304
    assert "newpkg-1.0-h0.conda" in json.loads(unzstd(got.content))["packages.conda"]
    plain = httpx.get(proxy.url + "/ch/linux-64/repodata.json", timeout=30)
    assert plain.status_code == 200
    assert "newpkg-1.0-h0.conda" in plain.json()["packages.conda"]
    assert settled(cache_dir(proxy)) == []


def test_a_big_cep15_snapshot_is_rewritten_to_point_at_the_proxy(
    start_proxy, upstream: Upstream, channel_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    proxy = start_proxy({"ch": {"upstream": upstream.url}}, ttl=0, extra=LIMIT)
    document = big_document(channel_dir, {"info": {"subdir": "linux-64", "base_url": "https://x/"}})
    upstream.override(ZST, zst(json.dumps(document).encode()))
    got = httpx.get(proxy.url + "/ch/linux-64/repodata.json", timeout=30)
    assert got.status_code == 200
    served = got.json()
    assert "newpkg-1.0-h0.conda" in served["packages.conda"]
    assert (
        served["info"].get("base_url", "").startswith(proxy.url) or "base_url" not in served["info"]
    )
    assert "https://x/" not in got.text


@pytest.mark.parametrize("case", CASES)
def test_a_refused_big_body_leaves_the_previous_snapshot_and_no_temp_file(
    start_proxy, upstream: Upstream, channel_dir: Path, case: str
) -> None:  # type: ignore[no-untyped-def]
    proxy = start_proxy({"ch": {"upstream": upstream.url}}, ttl=0, extra=LIMIT)
    before = httpx.get(proxy.url + "/ch" + ZST, timeout=30)
    assert before.status_code == 200
    body, spec = refused_bodies(channel_dir)[case]
    upstream.override(ZST, body, **spec)
    stale = httpx.get(proxy.url + "/ch" + ZST, timeout=30)
    assert (stale.status_code, stale.content) == (200, before.content), case
    assert stale.headers.get("warning", "").startswith("110"), "served as a stale copy"
    document = json.loads(unzstd(stale.content))
    assert "newpkg-1.0-h0.conda" not in document.get("packages.conda", {})
    # Once the upstream is good again, the next client gets a whole snapshot.
    upstream.reset()
    after = httpx.get(proxy.url + "/ch/linux-64/repodata.json", timeout=30)
    assert after.status_code == 200 and after.json()["info"]["subdir"] == "linux-64"
    assert settled(cache_dir(proxy)) == [], "no decompressed or downloaded temp file kept"
    assert proxy.log_path is not None
    no_crash_in_log(proxy.log_path.read_text())


@pytest.mark.parametrize("case", ["JSON broken only at its very end", "cut midway"])
def test_with_passthrough_a_refused_big_body_never_completes(
    start_proxy, upstream: Upstream, channel_dir: Path, case: str
) -> None:  # type: ignore[no-untyped-def]
    proxy = start_proxy(
        {"ch": {"upstream": upstream.url}}, ttl=0, extra=LIMIT + "refresh_passthrough = true\n"
    )
    assert httpx.get(proxy.url + "/ch" + ZST, timeout=30).status_code == 200
    body, spec = refused_bodies(channel_dir)[case]
    upstream.override(ZST, body, **spec)
    completed = None
    try:
        got = httpx.get(proxy.url + "/ch" + ZST, timeout=30)
        completed = got.status_code == 200 and got.content == body
    except httpx.HTTPError:  # the transfer was cut: what the rule promises
        completed = False
    assert completed is False, "a refused body was served whole"
    upstream.reset()
    assert httpx.get(proxy.url + "/ch/linux-64/repodata.json", timeout=30).status_code == 200
    assert settled(cache_dir(proxy)) == []
