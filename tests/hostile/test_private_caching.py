"""A shared cache in front of the proxy (Varnish, a CDN, a corporate proxy) keys on the URL:
a file of a private channel it kept would go to the next caller without a token. Against a
real process, every kind of file of a private channel (repodata and each variant, metadata,
the shard index, shards, packages; upstream, merged over uploads, and policy views; misses,
hits, 304s, HEAD, ranges, stale answers and a passed-through refresh) is sent `private`,
with max-age and immutable kept; the same files of a public channel stay `public`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
import zstandard

from tests.support.channel import Pkg, build_package
from tests.support.inproc import decode_index

pytestmark = pytest.mark.integration

READER = "reader-token-97531"
WRITER = "writer-token-86420"
TOKENS = {
    "reader": {"token": READER, "roles": {"*": "read"}},
    "ci": {"token": WRITER, "roles": {"team": "write", "pubteam": "write"}},
}
AS_READER = {"authorization": f"Bearer {READER}"}
TOOL = Pkg("mytool", "1.0", "h0", "linux-64")
CHANNELDATA = json.dumps({"channeldata_version": 1, "packages": {}, "subdirs": []}).encode()


@pytest.fixture(scope="module")
def tool(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    work = tmp_path_factory.mktemp("private-caching")
    return build_package(TOOL, work / "src", work / "out").read_bytes()


def channels(upstream_url: str) -> dict[str, dict[str, object]]:
    return {
        "pub": {"upstream": upstream_url},
        "priv": {"upstream": upstream_url, "private": True},
        "team": {"upstream": upstream_url, "private": True},  # merged over an upload
        "pol": {"upstream": upstream_url, "private": True, "cooldown": "1s"},  # policy views
        "pubteam": {"upstream": upstream_url},  # merged, public
    }


def upload(proxy, channel: str, data: bytes) -> None:
    digest = hashlib.sha256(data).hexdigest()
    got = httpx.post(
        f"{proxy.url}/api/channels/{channel}/upload/{TOOL.filename}?sha256={digest}",
        content=data,
        headers={"x-api-key": WRITER},
    )
    assert got.status_code == 201, got.text


def files(proxy, channel: str) -> list[str]:
    """One path of every kind a client asks this channel for."""
    index = httpx.get(
        f"{proxy.url}/{channel}/linux-64/repodata_shards.msgpack.zst", headers=AS_READER
    )
    assert index.status_code == 200, (channel, index.text)
    shard = decode_index(index.content)["shards"]["datatool"].hex()
    return [
        f"/{channel}/linux-64/repodata.json",
        f"/{channel}/linux-64/repodata.json.zst",
        f"/{channel}/linux-64/current_repodata.json",
        f"/{channel}/noarch/repodata.json",
        f"/{channel}/linux-64/repodata_shards.msgpack.zst",
        f"/{channel}/linux-64/shards/{shard}.msgpack.zst",
        f"/{channel}/linux-64/libzlib-1.3-h0.conda",
        f"/{channel}/linux-64/libcore-2.1-h1.tar.bz2",
        f"/{channel}/channeldata.json",
        f"/t/{READER}/{channel}/linux-64/repodata.json",
    ]


def ask(client: httpx.Client, path: str, method: str = "GET", **headers: str) -> httpx.Response:
    """Status and headers only (a range of a compressed body cannot be decoded)."""
    response = client.send(client.build_request(method, path, headers=headers), stream=True)
    response.close()
    return response


def answers(client: httpx.Client, path: str) -> dict[str, httpx.Response]:
    """The file asked every way a client asks: first (a miss), again (a hit), conditionally,
    by HEAD and by range."""
    first = ask(client, path)
    seen = {"first": first, "again": ask(client, path), "head": ask(client, path, "HEAD")}
    if "etag" in first.headers:
        seen["304"] = ask(client, path, **{"if-none-match": first.headers["etag"]})
    seen["range"] = ask(client, path, range="bytes=0-3")
    return seen


def wrong_headers(proxy, channel: str, audience: str) -> list[str]:
    wrong = []
    with httpx.Client(base_url=proxy.url, headers=AS_READER, timeout=20) as client:
        for path in files(proxy, channel):
            for how, got in answers(client, path).items():
                control = got.headers.get("cache-control", "")
                directives = [d.strip() for d in control.split(",")]
                if got.status_code not in (200, 206, 304) or directives[0] != audience:
                    wrong.append(f"{how} {path}: {got.status_code} {control!r}")
                elif "public" in directives[1:] or "private" in directives[1:]:
                    wrong.append(f"{how} {path}: {control!r}")
                elif path.endswith((".conda", ".bz2")) and "immutable" not in directives:
                    wrong.append(f"{how} {path}: a package lost immutable: {control!r}")
                elif not any(d.startswith("max-age=") for d in directives):
                    wrong.append(f"{how} {path}: no max-age: {control!r}")
    return wrong


def test_every_file_of_a_private_channel_is_kept_from_shared_caches(upstream, start_proxy, tool):
    upstream.override("/channeldata.json", CHANNELDATA, headers={"etag": '"cd1"'})
    proxy = start_proxy(channels(upstream.url), tokens=TOKENS)
    upload(proxy, "team", tool)
    upload(proxy, "pubteam", tool)
    wrong = []
    for name in ("priv", "team", "pol"):
        wrong += wrong_headers(proxy, name, "private")
    for name in ("pub", "pubteam"):
        wrong += wrong_headers(proxy, name, "public")
    assert wrong == []
    # Merged views answer for uploads too: the uploaded package and its shard.
    with httpx.Client(base_url=proxy.url, headers=AS_READER) as client:
        index = decode_index(client.get("/team/linux-64/repodata_shards.msgpack.zst").content)
        shard = index["shards"]["mytool"].hex()
        for path in (
            f"/team/linux-64/{TOOL.filename}",
            f"/team/linux-64/shards/{shard}.msgpack.zst",
        ):
            got = client.get(path)
            assert got.status_code == 200
            assert got.headers["cache-control"].startswith("private, max-age="), path


def test_stale_and_passed_through_answers_of_a_private_channel_are_private(
    upstream, start_proxy, channel_dir: Path
):
    proxy = start_proxy(
        {"priv": {"upstream": upstream.url, "private": True}},
        ttl=0,
        tokens={"reader": TOKENS["reader"]},
        extra="refresh_passthrough = true\n",
    )
    with httpx.Client(base_url=proxy.url, headers=AS_READER, timeout=20) as client:
        assert client.get("/priv/linux-64/repodata.json.zst").status_code == 200
        # A changed upstream .zst, passed to the client as it arrives (no ETag yet).
        document = json.loads((channel_dir / "linux-64" / "repodata.json").read_bytes())
        document["info"]["changed"] = 1
        upstream.override(
            "/linux-64/repodata.json.zst",
            zstandard.compress(json.dumps(document).encode()),
            headers={"etag": '"changed"'},
        )
        followed = client.get("/priv/linux-64/repodata.json.zst")
        assert followed.status_code == 200 and followed.headers["x-cache"] == "MISS"
        assert "etag" not in followed.headers
        assert followed.headers["cache-control"] == "private, max-age=0"
        # The upstream down: the last snapshot, stale.
        upstream.reset()
        upstream.mode("down")
        stale = client.get("/priv/linux-64/repodata.json")
        assert stale.status_code == 200 and stale.headers["x-cache"] == "STALE"
        assert stale.headers["cache-control"] == "private, max-age=0"
