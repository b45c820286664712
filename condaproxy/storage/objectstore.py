"""The shared bucket: an S3-compatible object store behind seven small operations.

boto3 (botocore) is the client, run in a thread pool of its own so that a slow store never takes
the event loop's default threads from disk I/O. Why boto3 and not obstore, which the design
study preferred: it is mature, speaks conditional writes (`IfMatch` / `IfNoneMatch` on
PutObject) and has no interpreter-exit abort to work around; its CPU cost per request only
matters on a miss, which pays an upstream or bucket round trip anyway.

Availability: an answer of the store (404, 412, 304) is an answer; anything else (refused,
timed out, 5xx, access denied) marks the store down. While it is down every call fails at once
with `StoreUnavailable`, so misses go upstream without waiting on a dead store, uploads get a
503 and /readyz says so. Only a call made under `probing()` (the cluster's poll) tries the
store again, at most every `storage.retry_after` seconds; its success brings the store back
for everyone. A client's request is never the one that finds out whether a dead store has
come back (it would wait out the timeouts, every `retry_after`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import boto3
import boto3.exceptions
import botocore.config
import botocore.exceptions
from boto3.s3.transfer import TransferConfig

from ..rules.errors import ServiceUnavailable
from ..settings import ConfigError, Settings, StorageSettings

T = TypeVar("T")
READ_CHUNK = 1 << 20
CAS_TRIES = 12  # compare-and-swap attempts per change before giving up with a 503
# The largest document (manifest, purge log) read whole into memory. A manifest lists every
# upload of a channel, about 1 KB each as this proxy writes them (the record plus sha256,
# size, who and when): 256 MiB is a quarter of a million uploads, where a busy internal
# channel has thousands (10,000 uploads: about 10 MB), and the order of the largest upstream
# repodata the proxy decodes (conda-forge's linux-64). Past it, anyone with write access to
# the bucket could make every replica's poll allocate whatever they wrote.
MAX_DOC = 256 << 20
_MISSING = {"404", "NoSuchKey", "NotFound"}
_PRECONDITION = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}


# What a store that cannot answer raises (refused, reset, timed out, a failed transfer).
_DOWN = (
    TimeoutError,
    ConnectionError,
    botocore.exceptions.BotoCoreError,
    boto3.exceptions.S3UploadFailedError,
)


_probing: contextvars.ContextVar[bool] = contextvars.ContextVar("probing", default=False)


@contextlib.contextmanager
def probing() -> Iterator[None]:
    """Calls made inside may try a store that is down (once `retry_after` has passed)."""
    token = _probing.set(True)
    try:
        yield
    finally:
        _probing.reset(token)


class StoreUnavailable(ServiceUnavailable):
    """The shared store cannot be used right now (the message says why, never a secret)."""


class DocumentTooLarge(StoreUnavailable):
    """A document over its size limit: refused like one that cannot be read (nothing is
    written over it, the replica keeps what it adopted last). The store is not marked down:
    it answered."""


class PreconditionFailed(Exception):
    """A conditional write lost: the object changed (If-Match) or exists (If-None-Match)."""


class CasNotHonoured(Exception):
    """The store accepted a write its precondition should have refused."""


@dataclass(frozen=True)
class Doc:
    body: bytes
    etag: str


@dataclass
class Opened:
    """An object being read: its size, and its bytes as they arrive (close when done)."""

    name: str
    size: int
    etag: str
    _body: Any
    _store: ObjectStore

    async def iter_bytes(self, limit: int | None = None) -> AsyncIterator[bytes]:
        """The bytes as they arrive; with `limit`, never more than `limit` + 1 of them read
        (a caller that sees the extra byte knows the object is longer than it may be)."""
        read = 0
        while limit is None or read <= limit:
            want = READ_CHUNK if limit is None else min(READ_CHUNK, limit + 1 - read)
            chunk = await self._store._run(self._body.read, want)
            if not chunk:
                return
            read += len(chunk)
            yield chunk

    def close(self) -> None:
        self._body.close()


def client_for(settings: StorageSettings, pool: int = 32) -> Any:
    """A boto3 S3 client for `settings`: path-style addressing for a custom endpoint (MinIO and
    moto want it), bounded timeouts, one retry, checksums only where the API requires them."""
    config = botocore.config.Config(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.timeout,
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=pool,
        s3={"addressing_style": "path"} if settings.endpoint else {},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    keys = settings.access_key_id, settings.secret_access_key
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint or None,
        region_name=settings.region,
        aws_access_key_id=keys[0].value if keys[0] else None,
        aws_secret_access_key=keys[1].value if keys[1] else None,
        config=config,
    )


class ObjectStore:
    def __init__(
        self,
        settings: StorageSettings,
        clock: Callable[[], float] = time.monotonic,
        client: Any = None,
    ) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self.clock = clock
        self._client = client or client_for(settings)
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="objectstore")
        self._down_until = 0.0
        self.last_error = ""
        # Large blobs go up in 64 MiB parts, one part at a time (bounded memory).
        self._transfer = TransferConfig(
            multipart_threshold=64 << 20, multipart_chunksize=64 << 20, use_threads=False
        )

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def available(self) -> bool:
        return not self.last_error

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # calls

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if not self.available and not (_probing.get() and self.clock() >= self._down_until):
            raise StoreUnavailable(f"shared storage unavailable: {self.last_error}")
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in _MISSING or (status == "404" and code != "NoSuchBucket"):
                self._up()
                raise FileNotFoundError(code) from None
            if code in _PRECONDITION or status in {"412", "409"}:
                self._up()
                raise PreconditionFailed(code) from None
            if status == "304":
                self._up()
                raise _NotModified() from None
            raise self._down(f"{code or status} from the store") from None
        except _DOWN as exc:
            raise self._down(type(exc).__name__) from None
        self._up()
        return result

    def _up(self) -> None:
        """The store answered: it is available to every caller again."""
        self.last_error = ""

    def _down(self, why: str) -> StoreUnavailable:
        self.last_error = f"{self.describe()}: {why}"
        self._down_until = self.clock() + self.settings.retry_after
        return StoreUnavailable(f"shared storage unavailable: {self.last_error}")

    def _key(self, name: str) -> str:
        return self.prefix + name

    async def open(self, name: str) -> Opened | None:
        """The object's bytes as a stream, or None if there is no such object."""
        try:
            got = await self._run(self._client.get_object, Bucket=self.bucket, Key=self._key(name))
        except FileNotFoundError:
            return None
        return Opened(name, int(got["ContentLength"]), got.get("ETag", ""), got["Body"], self)

    async def put_file(self, name: str, path: Path) -> None:
        """Upload a local file (multipart past 64 MiB); a blind overwrite."""
        await self._run(
            self._client.upload_file, str(path), self.bucket, self._key(name), Config=self._transfer
        )

    async def get_doc(
        self, name: str, if_none_match: str | None = None, limit: int | None = None
    ) -> Doc | None:
        """A small object and its ETag; None if absent. With `if_none_match`, an unchanged
        object comes back as the same Doc with an empty body (304). One over `limit` bytes
        raises DocumentTooLarge: refused from its announced length before any byte is read,
        and never more than `limit` + 1 bytes read whatever the length said (default MAX_DOC)."""
        limit = MAX_DOC if limit is None else limit
        extra = {"IfNoneMatch": if_none_match} if if_none_match else {}

        def read() -> Doc:
            got = self._client.get_object(Bucket=self.bucket, Key=self._key(name), **extra)
            body = got["Body"]
            try:
                announced = int(got.get("ContentLength") or 0)
                if announced > limit:
                    raise self._too_large(name, f"is {announced} bytes", limit)
                parts, size = [], 0
                while size <= limit:
                    chunk = body.read(min(READ_CHUNK, limit + 1 - size))
                    if not chunk:
                        break
                    parts.append(chunk)
                    size += len(chunk)
                if size > limit:
                    raise self._too_large(name, f"announced {announced} bytes but has more", limit)
            finally:
                body.close()
            return Doc(b"".join(parts), got["ETag"])

        try:
            return await self._run(read)
        except FileNotFoundError:
            return None
        except _NotModified:
            return Doc(b"", if_none_match or "")

    def _too_large(self, name: str, what: str, limit: int) -> DocumentTooLarge:
        return DocumentTooLarge(
            f"{name} in shared storage {what}, over the {limit}-byte limit for a document: refused"
        )

    async def put_doc(
        self, name: str, body: bytes, *, if_match: str | None = None, create: bool = False
    ) -> str:
        """Write a small object only if it is still `if_match` (or, with `create`, does not
        exist yet); raises PreconditionFailed otherwise. Returns the new ETag."""
        extra = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"} if create else {}
        put = await self._run(
            self._client.put_object, Bucket=self.bucket, Key=self._key(name), Body=body, **extra
        )
        return str(put["ETag"])

    async def update(
        self, name: str, change: Callable[[Doc | None], bytes], limit: int | None = None
    ) -> tuple[str, int]:
        """Compare-and-swap: read the object, `change` it, write it back only if nobody wrote
        meanwhile (If-Match; If-None-Match: * for the first write), else read again, with
        jittered backoff. `change` may raise to give up. Returns the new ETag and the number
        of lost races. A document over `limit` is refused (get_doc), so never written over."""
        for attempt in range(CAS_TRIES):
            doc = await self.get_doc(name, limit=limit)
            body = change(doc)
            try:
                if doc is None:
                    return await self.put_doc(name, body, create=True), attempt
                return await self.put_doc(name, body, if_match=doc.etag), attempt
            except PreconditionFailed:
                await asyncio.sleep(random.uniform(0, 0.02 * 2 ** min(attempt, 6)))
        raise ServiceUnavailable(
            f"{self.describe()}{name} changed {CAS_TRIES} times while this change tried to "
            "record itself: try again"
        )

    async def list(self, prefix: str) -> list[tuple[str, int, float]]:
        """Every object below `prefix`: (name below the store's prefix, size, mtime)."""

        def listing() -> list[tuple[str, int, float]]:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            return [
                (o["Key"][len(self.prefix) :], int(o["Size"]), o["LastModified"].timestamp())
                for page in pages
                for o in page.get("Contents", [])
            ]

        return await self._run(listing)

    async def delete(self, name: str) -> None:
        await self._run(self._client.delete_object, Bucket=self.bucket, Key=self._key(name))

    async def probe(self, replica: str) -> None:
        """Refuse a store that ignores preconditions: it would lose concurrent uploads. Raises
        CasNotHonoured (or StoreUnavailable when it cannot be asked)."""
        name = f"control/probe/{replica}-{secrets.token_hex(6)}"
        await self.put_doc(name, b"1", create=True)
        try:
            checks = [
                ("If-None-Match: *", {"create": True}),
                ("If-Match with a wrong ETag", {"if_match": '"0000-condaproxy-probe"'}),
            ]
            for header, kwargs in checks:
                try:
                    await self.put_doc(name, b"2", **kwargs)  # type: ignore[arg-type]
                except PreconditionFailed:
                    continue
                raise CasNotHonoured(
                    f"{self.describe()} accepted a PUT with {header} that it had to refuse "
                    "(412): the store does not honour conditional writes, so concurrent "
                    "uploads would be lost"
                )
        finally:
            await self.delete(name)


class _NotModified(Exception):
    pass


def check_conditional_writes(settings: Settings, replica: str) -> str | None:
    """Start-up gate: a store that ignores preconditions stops the proxy with one line naming
    `storage.url` (it would lose concurrent uploads). A store that cannot be reached is only
    a warning (returned): the proxy serves meanwhile, and probes again before any upload."""
    if settings.storage is None:
        return None
    store = ObjectStore(settings.storage)

    async def probe() -> None:
        try:
            await store.probe(replica)
        finally:
            store.close()

    try:
        asyncio.run(probe())
    except CasNotHonoured as exc:
        raise ConfigError(f"{settings.source}: 'storage.url' {exc}") from None
    except (StoreUnavailable, FileNotFoundError) as exc:
        return f"shared storage not reachable at start-up ({exc}); uploads wait for it"
    return None
