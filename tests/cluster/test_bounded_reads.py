"""What a replica reads from the shared bucket is bounded by what it expects, whoever wrote the
bucket: a manifest or purge log past its size limit, or an uploaded blob longer than its
manifest says, is refused (from the announced length at once, and after at most one byte too
many when the store lies about the length), never adopted, never written over, and never
copied to disk past the manifest's size. Against moto (a real S3 API) and, for stores that
lie about lengths, a fake client behind the real ObjectStore."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from condaproxy.settings import Secret, StorageSettings
from condaproxy.storage import objectstore, purges
from condaproxy.storage.blobs import TempBlob
from condaproxy.storage.layout import manifest_key, upload_blob_key
from condaproxy.storage.locks import KeyedLocks
from condaproxy.storage.manifests import SharedManifests
from condaproxy.storage.objectstore import ObjectStore, StoreUnavailable
from condaproxy.storage.purges import PurgeLog
from condaproxy.storage.uploads import UploadStore
from tests.support.s3 import KEY_ID, SECRET

CHANNEL = "internal"
LIMIT = 4096


def settings(url: str = "s3://bucket/prod", endpoint: str = "") -> StorageSettings:
    return StorageSettings(
        url=url,
        endpoint=endpoint,
        allow_http=True,
        access_key_id=Secret(KEY_ID),
        secret_access_key=Secret(SECRET),
        connect_timeout=1,
        timeout=2,
    )


class Body:
    """A response body that counts what was read from it."""

    def __init__(self, data: bytes) -> None:
        self.data, self.read_bytes, self.closed = data, 0, False

    def read(self, amt: int | None = None) -> bytes:
        amt = len(self.data) - self.read_bytes if amt is None else amt
        chunk = self.data[self.read_bytes : self.read_bytes + amt]
        self.read_bytes += len(chunk)
        return chunk

    def close(self) -> None:
        self.closed = True


class LyingClient:
    """A store that announces `lengths[key]` (default: the truth) for `objects[key]`."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.lengths: dict[str, int] = {}
        self.bodies: dict[str, Body] = {}
        self.puts: list[str] = []

    def get_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        data = self.objects[Key]
        self.bodies[Key] = Body(data)
        length = self.lengths.get(Key, len(data))
        return {"Body": self.bodies[Key], "ContentLength": length, "ETag": '"e1"'}

    def put_object(self, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict[str, Any]:
        self.puts.append(Key)
        return {"ETag": '"e2"'}


def padded_manifest(size: int) -> bytes:
    """A well-formed, empty manifest of `size` bytes (JSON allows trailing whitespace)."""
    body = json.dumps({"format": 1, "subdirs": {}}).encode()
    return body + b" " * (size - len(body))


def manifests_over(store: ObjectStore, tmp_path: Path) -> SharedManifests:
    uploads = UploadStore(tmp_path / "uploads", tmp_path / "tmp", KeyedLocks(tmp_path / "locks"))
    shared = SharedManifests(store, uploads, "replica-a")
    shared.probed = True  # conditional writes are moto's (or the fake's) business here
    return shared


# manifests and the purge log: the document limit


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limits shrunk, so that a test need not write 256 MiB to go past them."""
    monkeypatch.setattr(objectstore, "MAX_DOC", LIMIT, raising=False)
    monkeypatch.setattr(purges, "MAX_LOG", LIMIT, raising=False)


async def test_a_manifest_over_the_limit_is_never_adopted_nor_written_over(
    s3_server, bucket, tmp_path: Path, small_limits
) -> None:
    store = ObjectStore(settings(f"s3://{bucket}/prod", s3_server.url))
    shared = manifests_over(store, tmp_path)
    key = f"prod/{manifest_key(CHANNEL)}"
    s3 = s3_server.client()
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=padded_manifest(LIMIT))
        assert await shared.refresh(CHANNEL), "a manifest at the limit is read"
        big = padded_manifest(LIMIT + 1)
        s3.put_object(Bucket=bucket, Key=key, Body=big)
        with pytest.raises(StoreUnavailable, match=r"uploads/manifests/internal\.json.*limit"):
            await shared.refresh(CHANNEL)
        # An upload's compare-and-swap reads it first: refused, the object left as it is.
        with pytest.raises(StoreUnavailable, match="limit"):
            await shared.delete(CHANNEL, "linux-64", "tool-1.0-0.conda")
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == big
        assert store.available, "the store answered: it is not taken as down"
    finally:
        store.close()


async def test_a_purge_log_over_its_limit_is_refused_and_never_written_over(
    s3_server, bucket, tmp_path: Path, small_limits
) -> None:
    store = ObjectStore(settings(f"s3://{bucket}/prod", s3_server.url))
    log = PurgeLog(store)
    key = f"prod/{purges.KEY}"
    s3 = s3_server.client()
    big = json.dumps({"seq": 1, "entries": [{"seq": 1, "scope": {}}]}).encode() + b" " * LIMIT
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=big)
        with pytest.raises(StoreUnavailable, match="limit"):
            await log.start()
        with pytest.raises(StoreUnavailable, match="limit"):
            await log.append({"channel": "cf"})
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == big
    finally:
        store.close()


async def test_a_document_announced_over_the_limit_is_refused_before_a_byte_is_read(
    small_limits,
) -> None:
    client = LyingClient()
    client.objects["prod/control/purges.json"] = b"{}" + b" " * LIMIT
    store = ObjectStore(settings(), client=client)
    try:
        with pytest.raises(StoreUnavailable, match=f"is {LIMIT + 2} bytes"):
            await store.get_doc("control/purges.json")
        body = client.bodies["prod/control/purges.json"]
        assert body.read_bytes == 0 and body.closed
    finally:
        store.close()


async def test_a_document_longer_than_its_announced_length_is_cut_off_past_the_limit(
    small_limits,
) -> None:
    client = LyingClient()
    key = f"prod/{manifest_key(CHANNEL)}"
    client.objects[key] = padded_manifest(64 << 20)  # 64 MiB announced as 100 bytes
    client.lengths[key] = 100
    store = ObjectStore(settings(), client=client)
    try:
        with pytest.raises(StoreUnavailable, match="announced 100 bytes but has more"):
            await store.get_doc(manifest_key(CHANNEL))
        assert client.bodies[key].read_bytes == LIMIT + 1
        assert client.puts == []
    finally:
        store.close()


# uploaded blobs: the manifest's size


def manifest_naming(data: bytes, size: int) -> bytes:
    sha = hashlib.sha256(data).hexdigest()
    record = {
        "name": "tool",
        "version": "1.0",
        "build": "0",
        "build_number": 0,
        "subdir": "linux-64",
        "depends": [],
        "sha256": sha,
        "size": size,
    }
    entry = {
        "channel": CHANNEL,
        "subdir": "linux-64",
        "filename": "tool-1.0-0.conda",
        "sha256": sha,
        "size": size,
        "uploaded_at": 1_800_000_000.0,
        "uploaded_by": "ci",
        "record": record,
    }
    files = {"tool-1.0-0.conda": entry}
    return json.dumps({"format": 1, "subdirs": {"linux-64": {"generation": 1, "files": files}}})


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every byte count written to a temp blob."""
    counts: list[int] = []
    write = TempBlob.write

    def counting(self: TempBlob, data: bytes | memoryview) -> None:
        counts.append(len(data))
        write(self, data)

    monkeypatch.setattr(TempBlob, "write", counting)
    return counts


def with_blob(data: bytes, manifest_size: int, announced: int | None = None) -> LyingClient:
    client = LyingClient()
    client.objects[f"prod/{manifest_key(CHANNEL)}"] = manifest_naming(data, manifest_size).encode()
    blob = f"prod/{upload_blob_key(hashlib.sha256(data).hexdigest())}"
    client.objects[blob] = data
    if announced is not None:
        client.lengths[blob] = announced
    return client


def blob_body(client: LyingClient, data: bytes) -> Body:
    return client.bodies[f"prod/{upload_blob_key(hashlib.sha256(data).hexdigest())}"]


async def test_a_blob_whose_size_is_not_the_manifests_is_refused_before_a_byte_is_read(
    tmp_path: Path, written: list[int]
) -> None:
    data = b"x" * (3 << 20)
    client = with_blob(data, manifest_size=1000)  # a 3 MiB object for a 1000-byte upload
    store = ObjectStore(settings(), client=client)
    shared = manifests_over(store, tmp_path)
    try:
        with pytest.raises(StoreUnavailable) as refused:
            await shared.refresh(CHANNEL)
        assert blob_body(client, data).read_bytes == 0 and blob_body(client, data).closed
        assert sum(written) == 0
        assert "3145728 bytes, the manifest says 1000" in refused.value.message
        assert shared.uploads.subdirs(CHANNEL) == []
        assert list((tmp_path / "tmp").iterdir()) == []
    finally:
        store.close()


async def test_a_blob_longer_than_it_said_is_never_written_past_the_manifests_size(
    tmp_path: Path, written: list[int]
) -> None:
    data = b"y" * (5 << 20)
    size = 1000
    client = with_blob(data, manifest_size=size, announced=size)  # lies about its length
    store = ObjectStore(settings(), client=client)
    shared = manifests_over(store, tmp_path)
    try:
        with pytest.raises(StoreUnavailable) as refused:
            await shared.refresh(CHANNEL)
        assert sum(written) <= size
        assert blob_body(client, data).read_bytes <= size + 1
        assert "longer than the 1000 bytes" in refused.value.message
        assert shared.uploads.subdirs(CHANNEL) == []
        assert list((tmp_path / "tmp").iterdir()) == []
    finally:
        store.close()


async def test_a_blob_of_the_manifests_size_and_sha256_is_copied(tmp_path: Path) -> None:
    data = b"z" * 5000
    client = with_blob(data, manifest_size=len(data))
    store = ObjectStore(settings(), client=client)
    shared = manifests_over(store, tmp_path)
    try:
        assert await shared.refresh(CHANNEL)
        assert shared.uploads.blobs.exists(hashlib.sha256(data).hexdigest())
        assert "tool-1.0-0.conda" in shared.uploads.manifest(CHANNEL, "linux-64")
    finally:
        store.close()
