"""cache.refresh_passthrough: a new upstream repodata.json.zst goes to the client as it arrives,
and its last byte only once the proxy has checked and adopted exactly those bytes.

Real processes: the test upstream sends the new .zst in two parts with a pause between, so a
client that sees bytes before the pause ends was served while the body was still arriving.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
import zstandard

from tests.support.processes import Proxy, Upstream

pytestmark = pytest.mark.integration

ZST = "/linux-64/repodata.json.zst"
PAUSE = 1.5
ON = "refresh_passthrough = true\n"


def new_snapshot(channel_dir: Path, extra: dict[str, object] | None = None, pad: int = 0) -> bytes:
    """The channel's repodata with one more record, as a .zst another upstream would serve;
    `pad` bytes of incompressible text in that record make the .zst that much bigger (the
    upstream client reads in pieces of up to 1 MiB)."""
    document = json.loads((channel_dir / "linux-64" / "repodata.json").read_bytes())
    document.setdefault("packages.conda", {})["newpkg-1.0-h0.conda"] = {
        "name": "newpkg",
        "version": "1.0",
        "build": "h0",
        "build_number": 0,
        "depends": [],
        "subdir": "linux-64",
        "sha256": "0" * 64,
        "size": 1,
        "license": base64.b64encode(os.urandom(pad * 3 // 4)).decode(),
    }
    document.update(extra or {})
    return zstandard.ZstdCompressor(level=5).compress(json.dumps(document).encode())


def timed_get(url: str) -> tuple[int, bytes, float | None, httpx.Headers, str | None]:
    """Status, the bytes received, when the first arrived (s), headers, and the error that
    ended the transfer early (None if it completed)."""
    t0, first, body = time.monotonic(), None, b""
    try:
        with httpx.stream("GET", url, timeout=20) as response:
            for chunk in response.iter_raw():
                if chunk and first is None:
                    first = time.monotonic() - t0
                body += chunk
            return response.status_code, body, first, response.headers, None
    except httpx.HTTPError as exc:
        return response.status_code, body, first, response.headers, type(exc).__name__


def unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


@pytest.fixture
def followed(start_proxy, upstream: Upstream) -> Proxy:  # type: ignore[no-untyped-def]
    return start_proxy({"ch": {"upstream": upstream.url}}, extra=ON)


def test_the_first_bytes_of_a_new_zst_arrive_while_the_upstream_still_sends(
    followed: Proxy, upstream: Upstream, channel_dir: Path
) -> None:
    body = new_snapshot(channel_dir, pad=4 << 20)
    upstream.override(ZST, body, pause_after=[len(body) // 2, PAUSE])
    status, got, first, headers, error = timed_get(followed.url + "/ch" + ZST)
    assert (status, error) == (200, None)
    assert got == body, "the upstream's bytes, whole"
    assert first is not None and first < PAUSE * 0.6, f"first byte after {first:.2f} s"
    assert "etag" not in headers, "no ETag before the snapshot's digest is known"
    # The snapshot was adopted: the next client gets the same bytes from the cache, with an ETag.
    again = httpx.get(followed.url + "/ch" + ZST)
    assert again.content == body and again.headers["etag"]
    assert upstream.count("GET", ZST) == 1


def test_clients_asking_during_a_refresh_follow_the_same_download(
    followed: Proxy, upstream: Upstream, channel_dir: Path
) -> None:
    body = new_snapshot(channel_dir, pad=4 << 20)
    upstream.override(ZST, body, pause_after=[len(body) // 2, PAUSE])
    results: list[tuple[int, bytes, float | None, httpx.Headers, str | None]] = []
    threads = [
        threading.Thread(target=lambda: results.append(timed_get(followed.url + "/ch" + ZST)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join(30)
    assert [(r[0], r[1] == body, r[4]) for r in results] == [(200, True, None)] * 3
    assert upstream.count("GET", ZST) == 1, "one upstream request for every follower"


def refused_bodies(channel_dir: Path) -> dict[str, tuple[bytes, dict[str, object]]]:
    good = new_snapshot(channel_dir)
    compress = zstandard.ZstdCompressor().compress
    return {
        "not json": (compress(b"<html>maintenance</html>" * 100), {}),
        "not a repodata document": (compress(json.dumps({"packages": []}).encode()), {}),
        "another subdir's repodata": (
            new_snapshot(channel_dir, {"info": {"subdir": "osx-64"}}),
            {},
        ),
        "not zstd": (b"\x00" * 4096, {}),
        "larger than max_repodata_size once decompressed": (
            compress(b'{"packages": {' + b" " * (3 << 20) + b"}}"),
            {},
        ),
        "cut midway": (good, {"break_after": len(good) // 2}),
        "longer than its Content-Length says": (good, {"headers": {"content-length": "100"}}),
        "CEP-15 base_url (the proxy rewrites it)": (
            new_snapshot(channel_dir, {"info": {"subdir": "linux-64", "base_url": "https://x/"}}),
            {},
        ),
    }


CASES = [
    "not json",
    "not a repodata document",
    "another subdir's repodata",
    "not zstd",
    "larger than max_repodata_size once decompressed",
    "cut midway",
    "longer than its Content-Length says",
    "CEP-15 base_url (the proxy rewrites it)",
]


@pytest.mark.parametrize("case", CASES)
def test_a_body_the_proxy_would_not_keep_never_completes_for_the_follower(
    start_proxy, upstream: Upstream, channel_dir: Path, case: str
) -> None:  # type: ignore[no-untyped-def]
    proxy = start_proxy(
        {"ch": {"upstream": upstream.url}}, extra=ON + 'max_repodata_size = "2MiB"\n'
    )
    body, spec = refused_bodies(channel_dir)[case]
    upstream.override(ZST, body, pause_after=[len(body) // 2, 0.3], **spec)
    status, got, _, _, error = timed_get(proxy.url + "/ch" + ZST)
    completed = status == 200 and error is None
    if completed:
        # Only the proxy's own, checked snapshot may complete (the rewritten base_url one is
        # never the upstream's bytes).
        assert got != body
        assert json.loads(unzstd(got))
    # Whatever the first client saw, nothing refused was kept: once the upstream is good again
    # the next client gets a whole, valid snapshot.
    upstream.reset()
    after = httpx.get(proxy.url + "/ch" + ZST)
    assert after.status_code == 200
    document = json.loads(unzstd(after.content))
    assert document["info"]["subdir"] == "linux-64"
    if case.startswith("CEP-15"):  # kept as the proxy rewrote it: packages via the proxy
        assert "base_url" not in document["info"]
    else:
        assert "newpkg-1.0-h0.conda" not in document["packages.conda"]


def test_off_by_default_a_refused_body_serves_the_previous_snapshot(
    start_proxy, upstream: Upstream, channel_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    proxy = start_proxy({"ch": {"upstream": upstream.url}}, ttl=0)
    before = httpx.get(proxy.url + "/ch" + ZST)
    assert before.status_code == 200
    upstream.override(ZST, zstandard.ZstdCompressor().compress(b"not json"))
    stale = httpx.get(proxy.url + "/ch" + ZST)
    assert (stale.status_code, stale.content) == (200, before.content)
    assert stale.headers.get("warning", "").startswith("110")
