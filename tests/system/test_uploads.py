"""Uploads against a real upstream, with the proxy as a separate process: quetz-client uploads,
py-rattler installs through one channel URL, refusals leave nothing behind."""

from __future__ import annotations

import asyncio
import base64
import bz2
import io
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import httpx
import msgpack
import pytest
from quetz_client.client import QuetzClient

from condaproxy.rules.codecs import zstd_decompress
from tests.support.channel import Pkg, build_package, index_channel
from tests.support.clients import rattler_install
from tests.support.processes import ROOT, Upstream

pytestmark = pytest.mark.integration

WRITE = "ci-write-token-1"
READ = "reader-token-22"
TOKENS = {
    "ci": {
        "token": WRITE,
        "roles": {"local": "write", "internal": "write", "secret": "write", "mirror": "write"},
    },
    "reader": {"token": READ, "roles": {"*": "read"}},
}
INTERNAL = Pkg("internal-tool", "1.0", "h0", "linux-64", ("libcore >=2", "pyutil"))


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("uploads")
    out = base / "out"
    built = {
        "internal": build_package(INTERNAL, base / "work", out),
        "internal_bz2": build_package(
            Pkg("internal-data", "0.3", "py_0", "noarch", (), ext=".tar.bz2"), base / "work", out
        ),
    }
    for i in range(8):
        built[f"many{i}"] = build_package(
            Pkg(f"many{i}", "1.0", "h0", "linux-64"), base / "work", out
        )
    return built


def channels(upstream_url: str, **local: object) -> dict[str, dict[str, object]]:
    return {
        "local": {"upstream": upstream_url, **local},
        "internal": {},
        "mirror": {"upstream": upstream_url, "mirror_only": True},
        "secret": {"private": True},
    }


def upload(
    proxy_url: str,
    channel: str,
    path: Path,
    token: str | None = WRITE,
    name: str | None = None,
    **params: str,
) -> httpx.Response:
    headers = {"x-api-key": token} if token else {}
    return httpx.post(
        f"{proxy_url}/api/channels/{channel}/upload/{name or path.name}",
        content=path.read_bytes(),
        params=params,
        headers=headers,
        timeout=30,
    )


def listing(proxy_url: str, channel: str, token: str = READ) -> list[dict]:
    r = httpx.get(f"{proxy_url}/api/channels/{channel}/packages", headers={"x-api-key": token})
    assert r.status_code == 200, r.text
    return r.json()["packages"]


def stored_files(cache: Path) -> list[Path]:
    """Everything an upload could leave behind: blobs and temp files."""
    return [p for d in ("uploads/blobs", "tmp") for p in (cache / d).rglob("*") if p.is_file()]


def test_quetz_client_upload_then_rattler_installs_with_upstream_dependencies(
    upstream, start_proxy, packages, tmp_path
):
    proxy = start_proxy(channels(upstream.url), tokens=TOKENS)
    client = QuetzClient.from_token(proxy.url, WRITE)
    client.post_file_to_channel("local", packages["internal"])
    [entry] = listing(proxy.url, "local")
    assert entry["name"] == "internal-tool" and entry["subdir"] == "linux-64"
    assert entry["uploaded_by"] == "ci" and len(entry["sha256"]) == 64

    result = rattler_install(f"{proxy.url}/local", tmp_path / "a", True, "internal-tool")
    assert result["ok"], result.get("trace")
    names = {r["name"] for r in result["records"]}
    assert names == {"internal-tool", "libcore", "libzlib", "pyutil"}
    assert (tmp_path / "a/prefix/share/internal-tool/1.0.txt").is_file()
    # The same through plain repodata.json (no shards).
    plain = rattler_install(f"{proxy.url}/local", tmp_path / "b", False, "internal-tool")
    assert plain["ok"], plain.get("trace")
    assert {r["name"] for r in plain["records"]} == names


@pytest.fixture
def confusing_upstream(channel_dir: Path, tmp_path: Path):
    """The upstream publishes `internal-tool 99.0`, a higher version of our internal name."""
    directory = tmp_path / "attacker-channel"
    shutil.copytree(channel_dir, directory)
    build_package(Pkg("internal-tool", "99.0", "h0", "linux-64"), tmp_path / "work", directory)
    index_channel(directory)
    server = Upstream(directory).start()
    yield server
    server.stop()


@pytest.mark.parametrize("sharded", [True, False], ids=["shards", "repodata-json"])
def test_dependency_confusion_the_local_package_wins(
    confusing_upstream, start_proxy, packages, tmp_path, sharded
):
    proxy = start_proxy(channels(confusing_upstream.url), tokens=TOKENS)
    assert upload(proxy.url, "local", packages["internal"]).status_code == 201
    result = rattler_install(f"{proxy.url}/local", tmp_path / "c", sharded, "internal-tool")
    assert result["ok"], result.get("trace")
    tool = next(r for r in result["records"] if r["name"] == "internal-tool")
    assert tool["version"] == "1.0"
    repodata = httpx.get(f"{proxy.url}/local/linux-64/repodata.json").json()
    assert "internal-tool-99.0-h0.conda" not in repodata["packages.conda"]


def test_allow_upstream_shows_both(confusing_upstream, start_proxy, packages, tmp_path):
    proxy = start_proxy(
        channels(confusing_upstream.url, allow_upstream=["internal-tool"]), tokens=TOKENS
    )
    assert upload(proxy.url, "local", packages["internal"]).status_code == 201
    repodata = httpx.get(f"{proxy.url}/local/linux-64/repodata.json").json()
    assert {"internal-tool-99.0-h0.conda", "internal-tool-1.0-h0.conda"} <= set(
        repodata["packages.conda"]
    )
    index = msgpack.unpackb(
        zstd_decompress(
            httpx.get(f"{proxy.url}/local/linux-64/repodata_shards.msgpack.zst").content
        )
    )
    digest = index["shards"]["internal-tool"].hex()
    shard = msgpack.unpackb(
        zstd_decompress(
            httpx.get(f"{proxy.url}/local/linux-64/shards/{digest}.msgpack.zst").content
        )
    )
    assert set(shard["packages.conda"]) == {
        "internal-tool-99.0-h0.conda",
        "internal-tool-1.0-h0.conda",
    }
    result = rattler_install(f"{proxy.url}/local", tmp_path / "d", True, "internal-tool")
    assert result["ok"], result.get("trace")
    assert next(r for r in result["records"] if r["name"] == "internal-tool")["version"] == "99.0"


def _tarball_without_index(path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"hello"
        info = tarfile.TarInfo("info/files")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    path.write_bytes(bz2.compress(buf.getvalue()))


def _conda_with_index(path: Path, index: bytes) -> None:
    """A .conda whose info/index.json says whatever we like."""
    import zstandard

    stem = path.name.removesuffix(".conda")
    info = io.BytesIO()
    with tarfile.open(fileobj=info, mode="w") as tar:
        member = tarfile.TarInfo("info/index.json")
        member.size = len(index)
        tar.addfile(member, io.BytesIO(index))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("metadata.json", '{"conda_pkg_format_version": 2}')
        z.writestr(f"info-{stem}.tar.zst", zstandard.compress(info.getvalue()))
        z.writestr(f"pkg-{stem}.tar.zst", zstandard.compress(b""))


def test_every_refused_upload_says_why_and_leaves_nothing(
    start_proxy, upstream, packages, tmp_path
):
    cache = tmp_path / "cache"
    proxy = start_proxy(
        channels(upstream.url),
        tokens=TOKENS,
        cache=cache,
        extra="[uploads]\nmax_upload_size = 2048\n",
    )
    good = packages["internal"]
    corrupt = tmp_path / "corrupt-1.0-0.conda"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip at all" * 10)
    truncated = tmp_path / "internal-tool-1.0-h0.conda"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    no_index = tmp_path / "noindex-1.0-0.tar.bz2"
    _tarball_without_index(no_index)
    bad_json = tmp_path / "badjson-1.0-0.conda"
    _conda_with_index(bad_json, b"{not json")
    tricky = tmp_path / "tricky-1.0-0.conda"
    _conda_with_index(
        tricky,
        b'{"name": "tricky", "version": "1.0", "build": "0", "build_number": 0,'
        b' "subdir": "../../etc"}',
    )
    big = tmp_path / "big-1.0-0.conda"
    big.write_bytes(b"x" * 4096)
    cases = [
        (
            upload(proxy.url, "local", good, name="notapackage.zip"),
            400,
            "is not <name>-<version>-<build>",
        ),
        (
            upload(proxy.url, "local", good, name="other-2.0-0.conda"),
            400,
            "does not match info/index.json",
        ),
        (upload(proxy.url, "local", good, name="..%2Fevil-1.0-0.conda"), 400, "contains a path"),
        (upload(proxy.url, "local", good, name="evil%5C-1.0-0.conda"), 400, "contains a path"),
        (upload(proxy.url, "local", good, name="evil%00-1.0-0.conda"), 400, "contains a path"),
        (upload(proxy.url, "local", tricky), 400, "contains a path"),
        (upload(proxy.url, "local", corrupt), 400, "corrupt or truncated archive"),
        (upload(proxy.url, "local", truncated), 400, "corrupt or truncated archive"),
        (upload(proxy.url, "local", no_index), 400, "has no info/index.json"),
        (upload(proxy.url, "local", bad_json), 400, "not valid JSON"),
        (upload(proxy.url, "local", big), 413, "max_upload_size"),
        (upload(proxy.url, "local", good, sha256="0" * 64), 400, "sha256 of the body is"),
        (upload(proxy.url, "local", good, sha256="xyz"), 400, "64 hex digits"),
        (upload(proxy.url, "local", good, token=None), 401, "a token is required"),
        (upload(proxy.url, "local", good, token="wrong-token-000"), 401, "unknown token"),
        (upload(proxy.url, "local", good, token=READ), 403, "may not write"),
        (upload(proxy.url, "mirror", good), 403, "takes no uploads"),
        (upload(proxy.url, "nope", good), 404, "unknown channel"),
    ]
    for response, status, text in cases:
        assert response.status_code == status, (response.request.url, response.text)
        assert text in response.json()["error"], (response.request.url, response.text)
    assert listing(proxy.url, "local") == []
    assert stored_files(cache) == []

    # An existing file needs force=true.
    assert upload(proxy.url, "local", good).status_code == 201
    conflict = upload(proxy.url, "local", good)
    assert conflict.status_code == 409 and "force=true" in conflict.json()["error"]
    assert upload(proxy.url, "local", good, force="true").status_code == 201
    assert len(listing(proxy.url, "local")) == 1
    assert not list((cache / "tmp").iterdir())


def test_private_channel_needs_a_read_token_in_any_form(start_proxy, upstream, packages):
    proxy = start_proxy(channels(upstream.url), tokens=TOKENS)
    assert upload(proxy.url, "secret", packages["internal"]).status_code == 201
    path = "/secret/linux-64/repodata.json"
    for headers in ({}, {"x-api-key": "wrong-token-000"}, {"authorization": "Bearer nope-nope-1"}):
        denied = httpx.get(proxy.url + path, headers=headers)
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(proxy.url + "/secret/linux-64/internal-tool-1.0-h0.conda").status_code == 401
    assert httpx.get(proxy.url + "/secret/noarch/repodata.json").status_code == 401
    basic = "Basic " + base64.b64encode(f"me:{READ}".encode()).decode()
    for url, headers in [
        (proxy.url + path, {"x-api-key": READ}),
        (proxy.url + path, {"authorization": f"Bearer {READ}"}),
        (proxy.url + path, {"authorization": basic}),
        (f"{proxy.url}/t/{READ}{path}", {}),
    ]:
        ok = httpx.get(url, headers=headers)
        assert ok.status_code == 200, (url, ok.text)
        assert "internal-tool-1.0-h0.conda" in ok.json()["packages.conda"]
    package = httpx.get(f"{proxy.url}/t/{READ}/secret/linux-64/internal-tool-1.0-h0.conda")
    assert package.content == packages["internal"].read_bytes()
    assert upload(proxy.url, "secret", packages["internal_bz2"], token=READ).status_code == 403
    # The API takes the token in the path too.
    path_upload = httpx.post(
        f"{proxy.url}/t/{WRITE}/api/channels/secret/upload/{packages['internal_bz2'].name}",
        content=packages["internal_bz2"].read_bytes(),
    )
    assert path_upload.status_code == 201, path_upload.text
    listed = httpx.get(f"{proxy.url}/t/{READ}/api/channels/secret/packages").json()["packages"]
    assert {p["filename"] for p in listed} == {
        packages["internal"].name,
        packages["internal_bz2"].name,
    }


def test_local_only_channel_serves_every_variant_consistently(start_proxy, upstream, packages):
    proxy = start_proxy(channels(upstream.url), tokens=TOKENS)
    empty = httpx.get(f"{proxy.url}/internal/noarch/repodata.json")
    assert empty.status_code == 200 and empty.json()["packages"] == {}, "noarch always exists"
    assert httpx.get(f"{proxy.url}/internal/linux-64/repodata.json").status_code == 404
    assert upload(proxy.url, "internal", packages["internal_bz2"]).status_code == 201
    base = f"{proxy.url}/internal/noarch"
    doc = httpx.get(f"{base}/repodata.json")
    assert "internal-data-0.3-py_0.tar.bz2" in doc.json()["packages"]
    assert doc.headers["etag"] != empty.headers["etag"]
    assert zstd_decompress(httpx.get(f"{base}/repodata.json.zst").content) == doc.content
    assert bz2.decompress(httpx.get(f"{base}/repodata.json.bz2").content) == doc.content
    assert httpx.get(f"{base}/current_repodata.json").content == doc.content
    record = doc.json()["packages"]["internal-data-0.3-py_0.tar.bz2"]
    body = httpx.get(f"{base}/internal-data-0.3-py_0.tar.bz2")
    assert body.content == packages["internal_bz2"].read_bytes()
    assert body.headers["etag"] == f'"{record["sha256"]}"'
    part = httpx.get(f"{base}/internal-data-0.3-py_0.tar.bz2", headers={"range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == body.content[:10]

    deleted = httpx.delete(
        f"{proxy.url}/api/channels/internal/packages/noarch/internal-data-0.3-py_0.tar.bz2",
        headers={"x-api-key": WRITE},
    )
    assert deleted.status_code == 200
    after = httpx.get(f"{base}/repodata.json")
    assert after.json()["packages"] == {} and after.headers["etag"] != doc.headers["etag"]
    assert httpx.get(f"{base}/internal-data-0.3-py_0.tar.bz2").status_code == 404


def test_multipart_upload_for_curl_users(start_proxy, upstream, packages):
    proxy = start_proxy(channels(upstream.url), tokens=TOKENS)
    files = [
        ("files", (p.name, p.read_bytes()))
        for p in (packages["internal"], packages["internal_bz2"])
    ]
    response = httpx.post(
        f"{proxy.url}/api/channels/local/files",
        files=files,
        headers={"x-api-key": WRITE},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    assert {u["filename"] for u in response.json()["uploaded"]} == {
        "internal-tool-1.0-h0.conda",
        "internal-data-0.3-py_0.tar.bz2",
    }
    assert len(listing(proxy.url, "local")) == 2


def test_concurrent_uploads_to_one_channel_lose_nothing(start_proxy, upstream, packages):
    proxy = start_proxy(channels(upstream.url), tokens=TOKENS, workers=2)
    paths = [packages[f"many{i}"] for i in range(8)]

    async def all_at_once() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"{proxy.url}/api/channels/local/upload/{p.name}",
                        content=p.read_bytes(),
                        headers={"x-api-key": WRITE},
                    )
                    for p in paths
                )
            )
        return [r.status_code for r in responses]

    assert asyncio.run(all_at_once()) == [201] * 8
    assert {u["filename"] for u in listing(proxy.url, "local")} == {p.name for p in paths}
    repodata = httpx.get(f"{proxy.url}/local/linux-64/repodata.json").json()
    assert {p.name for p in paths} <= set(repodata["packages.conda"])
    assert "datatool-1.0-h2.conda" in repodata["packages.conda"], "upstream records are still there"


def test_kill_9_during_and_after_an_upload(start_proxy, upstream, packages, tmp_path):
    cache = tmp_path / "cache"
    proxy = start_proxy(channels(upstream.url), tokens=TOKENS, cache=cache)
    data = packages["internal"].read_bytes()
    # A client that sends half the body, then stalls while the proxy is killed.
    script = (
        "import socket, sys, time\n"
        f"s = socket.create_connection(('127.0.0.1', {proxy.port}))\n"
        f"s.sendall(b'POST /api/channels/local/upload/{packages['internal'].name} HTTP/1.1\\r\\n'"
        f" b'Host: x\\r\\nX-API-Key: {WRITE}\\r\\nContent-Length: {len(data)}\\r\\n\\r\\n')\n"
        "s.sendall(sys.stdin.buffer.read())\n"
        "time.sleep(30)\n"
    )
    sender = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, cwd=ROOT)
    assert sender.stdin is not None
    sender.stdin.write(data[: len(data) // 2])
    sender.stdin.close()
    deadline = time.monotonic() + 10
    while not list((cache / "tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((cache / "tmp").iterdir()), "the upload is being received into a temp file"
    proxy.stop(kill=True)
    sender.kill()
    sender.wait()

    again = start_proxy(channels(upstream.url), tokens=TOKENS, cache=cache)
    assert listing(again.url, "local") == []
    assert stored_files(cache) == [], "start-up swept the half-received upload"
    assert upload(again.url, "local", packages["internal"]).status_code == 201
    again.stop(kill=True)

    third = start_proxy(channels(upstream.url), tokens=TOKENS, cache=cache)
    assert [u["filename"] for u in listing(third.url, "local")] == [packages["internal"].name]
    served = httpx.get(f"{third.url}/local/linux-64/{packages['internal'].name}")
    assert served.content == data
