"""The shared bucket and Redis are inputs, not trusted parties: a manifest, a purge log or a
lease value that this proxy did not write (or that was damaged) never makes a replica serve
or delete a file outside its stores, skip a purge, or fail a client's download."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
import redis

from condaproxy.rules.peer_auth import sign
from tests.cluster.replicas import PEER_TOKEN, WRITE, start_peers, wait_for
from tests.support.channel import Pkg, build_package
from tests.support.processes import Proxy, Upstream, free_port, write_config
from tests.support.redis_server import RedisServer
from tests.support.s3 import STORAGE_ENV, S3Server, storage_section

pytestmark = pytest.mark.integration

MANIFEST = "prod/uploads/manifests/local.json"
PURGES = "prod/control/purges.json"


@pytest.fixture(scope="module")
def tool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("hostile-cluster")
    return build_package(Pkg("hostile-tool", "1.0", "h0", "linux-64"), base / "work", base / "out")


def read_json(s3: S3Server, bucket: str, key: str) -> dict:  # type: ignore[type-arg]
    return json.loads(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def put_json(s3: S3Server, bucket: str, key: str, doc: object) -> None:
    s3.client().put_object(Bucket=bucket, Key=key, Body=json.dumps(doc).encode())


def test_a_manifest_naming_a_file_outside_the_upload_store_is_neither_served_nor_deleted(
    replicas, s3_server: S3Server, bucket: str, tool: Path, tmp_path: Path
) -> None:
    (a,) = replicas(1)
    created = httpx.post(
        f"{a.url}/api/channels/local/upload/{tool.name}",
        content=tool.read_bytes(),
        headers={"x-api-key": WRITE},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    victim = tmp_path / "victim-secret.txt"
    victim.write_bytes(b"admin_token = 'do-not-leak-0123456789'\n")
    manifest = read_json(s3_server, bucket, MANIFEST)
    subdir = manifest["subdirs"]["linux-64"]
    entry = subdir["files"][tool.name]
    # A sha256 that is a path: the blob store builds <root>/<aa>/<bb>/<sha256> from it.
    entry["sha256"] = "../" * 40 + str(victim).lstrip("/")
    entry["size"] = victim.stat().st_size
    subdir["generation"] += 1
    put_json(s3_server, bucket, MANIFEST, manifest)
    url = f"{a.url}/local/linux-64/{tool.name}"

    def settled() -> bool:
        body = httpx.get(url, timeout=30).content
        return b"do-not-leak" in body or "is not a manifest" in a.log_path.read_text()

    assert wait_for(settled, 10)
    got = httpx.get(url, timeout=30)
    assert b"do-not-leak" not in got.content
    assert got.status_code == 200 and got.content == tool.read_bytes()
    # The bucket's next manifest drops the entry: the file it named is not deleted either.
    subdir["files"].pop(tool.name)
    subdir["generation"] += 1
    put_json(s3_server, bucket, MANIFEST, manifest)
    assert wait_for(lambda: httpx.get(url, timeout=30).status_code == 404, 10)
    assert victim.is_file()


def test_a_purge_log_entry_this_proxy_cannot_read_never_skips_the_purges_after_it(
    replicas, upstream: Upstream, s3_server: S3Server, bucket: str
) -> None:
    (a,) = replicas(1)
    path = "/linux-64/libzlib-1.3-h0.conda"
    assert httpx.get(f"{a.url}/local{path}", timeout=30).status_code == 200
    assert httpx.get(f"{a.url}/local{path}", timeout=30).headers["x-cache"] == "HIT"
    fetched = upstream.count("GET", path)
    # The copy reaches the bucket in the background: once it is there, the purge must delete
    # it too, so the next GET can only come from the upstream.
    sha = hashlib.sha256((upstream.directory / path.lstrip("/")).read_bytes()).hexdigest()
    blob = f"prod/cas/sha256/{sha[:2]}/{sha}"
    assert wait_for(lambda: blob in s3_server.keys(bucket, "prod/cas/"), 30)
    # Another writer appends a scope this proxy does not know, then a real purge.
    log = {
        "seq": 2,
        "entries": [
            {"seq": 1, "scope": {"channel": "local", "colour": "red"}},
            {"seq": 2, "scope": {"channel": "local"}},
        ],
    }
    put_json(s3_server, bucket, PURGES, log)

    def purged() -> bool:
        return httpx.get(f"{a.url}/local{path}", timeout=30).headers["x-cache"] != "HIT"

    assert wait_for(purged, 10), "the purge after an unreadable entry was never applied"
    assert upstream.count("GET", path) == fetched + 1


def lease_key(bucket: str, sha256: str) -> str:
    return f"condaproxy:{bucket}/prod/:lease:dl:{sha256}"


@pytest.mark.parametrize(
    "holder",
    ["http://[::1", "\x00\r\nX: y"],
    ids=["bad-ipv6", "control"],
)
def test_a_garbage_lease_holder_in_redis_never_fails_a_download(
    upstream: Upstream,
    started,
    tmp_path: Path,
    s3_server: S3Server,
    bucket: str,
    redis_server: RedisServer,
    channel_dir: Path,
    holder: str,
) -> None:
    (a,) = start_peers(started, upstream.url, tmp_path, s3_server, bucket, redis_server.url, n=1)
    path = "linux-64/libzlib-1.3-h0.conda"
    expected = (channel_dir / path).read_bytes()
    sha = hashlib.sha256(expected).hexdigest()
    r = redis.Redis.from_url(redis_server.url)
    r.set(lease_key(bucket, sha), f"0123456789abcdef {holder}".encode(), px=60_000)
    got = httpx.get(f"{a.url}/local/{path}", timeout=30)
    assert got.status_code == 200, got.text
    assert got.content == expected


class Recorder(http.server.BaseHTTPRequestHandler):
    """A 'peer' at an address someone wrote into Redis: records what it is sent, serves
    nothing."""

    seen: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        Recorder.seen.append(f"{self.path}\n{self.headers}")
        self.send_response(503)
        self.send_header("content-length", "0")
        self.end_headers()


def test_the_peer_token_never_leaves_the_replica_for_an_address_read_from_redis(
    upstream: Upstream,
    started,
    tmp_path: Path,
    s3_server: S3Server,
    bucket: str,
    redis_server: RedisServer,
    channel_dir: Path,
) -> None:
    (a,) = start_peers(started, upstream.url, tmp_path, s3_server, bucket, redis_server.url, n=1)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        path = "linux-64/libzlib-1.3-h0.conda"
        expected = (channel_dir / path).read_bytes()
        sha = hashlib.sha256(expected).hexdigest()
        holder = f"0123456789abcdef http://127.0.0.1:{server.server_address[1]}"
        redis.Redis.from_url(redis_server.url).set(lease_key(bucket, sha), holder, px=60_000)
        got = httpx.get(f"{a.url}/local/{path}", timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert got.status_code == 200 and got.content == expected
    assert Recorder.seen, "the replica never asked the address in the lease"
    assert all(PEER_TOKEN not in request for request in Recorder.seen), Recorder.seen


def test_a_replica_reads_a_private_channel_only_with_a_signature_for_that_file(
    upstream: Upstream, tmp_path: Path, s3_server: S3Server, bucket: str, started
) -> None:
    port = free_port()
    extra = storage_section(s3_server, bucket) + (
        f'[cluster]\npeer_url = "http://127.0.0.1:{port}"\npeer_token = "{PEER_TOKEN}"\n'
    )
    config = write_config(
        tmp_path / "private.toml",
        tmp_path / "private-l1",
        {"secret": {"upstream": upstream.url, "private": True}},
        extra=extra,
    )
    proxy = Proxy(config, port=port, env=STORAGE_ENV)
    started.append(proxy)
    proxy.start()
    key = "secret/linux-64/libzlib-1.3-h0.conda"
    now = time.time()

    def get(signature: str) -> int:
        headers = {"x-condaproxy-peer": signature}
        return httpx.get(f"{proxy.url}/{key}", headers=headers, timeout=30).status_code

    assert get(sign(PEER_TOKEN, key, now)) == 200
    assert get(sign(PEER_TOKEN, "secret/linux-64/repodata.json", now)) == 401
    assert get(sign("another-token-0123456789", key, now)) == 401
    assert get(sign(PEER_TOKEN, key, now - 3600)) == 401
    assert get("") == 401
