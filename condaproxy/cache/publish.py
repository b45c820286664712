"""Accepting an upload: auth, spooling the body to disk with checksums, checking the package
(every archive member within an unpack budget, every record field), recording it. Any refusal
leaves nothing behind: the temp file is discarded on every error path."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog

from ..rules.archive import Budget, check_filename, check_index, make_record, unpack_budget
from ..rules.auth import require
from ..rules.errors import BadRequest, NotFound, ProxyError
from ..rules.merge import shard_bytes
from ..rules.records_check import InvalidRecord
from ..settings import ChannelSettings, TokenSettings, UploadSettings
from ..storage.blobs import BlobStore, TempBlob
from ..storage.uploads import Upload, UploadStore
from .unpack import read_package

_BATCH = 1 << 20  # bytes handed to a worker thread at a time

log = structlog.get_logger("condaproxy.cache.publish")


class MirrorOnly(ProxyError):
    status = 403


def check_sha256_param(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise BadRequest("query parameter 'sha256' must be 64 hex digits")
    return value


@dataclass
class Spool:
    """One uploaded file on its way to disk: a temp file plus its checksums and size."""

    filename: str
    temp: TempBlob
    sha256: Any = field(default_factory=hashlib.sha256)
    md5: Any = field(default_factory=hashlib.md5)
    size: int = 0

    def write(self, data: bytes) -> None:
        self.temp.write(data)
        self.sha256.update(data)
        self.md5.update(data)
        self.size += len(data)

    def discard(self) -> None:
        self.temp.discard()


@dataclass
class Publisher:
    channels: Mapping[str, ChannelSettings]
    uploads: UploadStore
    temp_store: BlobStore
    limits: UploadSettings

    @property
    def max_size(self) -> int:
        return self.limits.max_upload_size

    def writable_channel(
        self, name: str, who: TokenSettings | None, presented: bool
    ) -> ChannelSettings:
        channel = self.channels.get(name)
        if channel is None:
            raise NotFound(f"unknown channel '{name}'", channels=sorted(self.channels))
        require(who, presented, name, "write")
        if channel.mirror_only:
            raise MirrorOnly(f"channel '{name}' is a mirror of its upstream and takes no uploads")
        return channel

    def open_spool(self, filename: str) -> Spool:
        return Spool(filename, self.temp_store.new_temp())

    async def publish(
        self,
        channel: ChannelSettings,
        filename: str,
        body: AsyncIterator[bytes],
        who: TokenSettings,
        expected_sha256: str | None,
        force: bool,
    ) -> Upload:
        check_filename(filename)
        expected_sha256 = check_sha256_param(expected_sha256)
        spool = await self.receive(filename, body)
        upload, temp = await self.prepare(channel, spool, who, expected_sha256)
        return await self.commit(upload, temp, force)

    async def receive(self, filename: str, body: AsyncIterator[bytes]) -> Spool:
        """Stream the body to a temp file in ~1 MiB batches, written and hashed in a thread."""
        spool = self.open_spool(filename)
        try:
            async for batch in batches(body):
                await asyncio.to_thread(spool.write, batch)
        except BaseException:
            spool.discard()
            raise
        return spool

    async def commit(self, upload: Upload, temp: TempBlob, force: bool) -> Upload:
        (stored,) = await self.commit_all([(upload, temp)], force)
        return stored

    async def commit_all(
        self, staged: Sequence[tuple[Upload, TempBlob]], force: bool
    ) -> list[Upload]:
        """Record the packages of one request together: all of them, or none."""
        try:
            stored = await self.uploads.add_all(staged, force)
        except BaseException:
            for _, temp in staged:
                temp.discard()
            raise
        for upload in stored:
            log.info(
                "uploaded",
                channel=upload.channel,
                subdir=upload.subdir,
                filename=upload.filename,
                bytes=upload.size,
                by=upload.uploaded_by,
            )
        return stored

    async def prepare(
        self,
        channel: ChannelSettings,
        spool: Spool,
        who: TokenSettings,
        expected_sha256: str | None,
    ) -> tuple[Upload, TempBlob]:
        """Check one received package; nothing is recorded yet (the temp file holds it). The
        spool is discarded if the package is refused."""
        try:
            check_filename(spool.filename)
            sha256, md5 = spool.sha256.hexdigest(), spool.md5.hexdigest()
            if expected_sha256 is not None and sha256 != expected_sha256:
                raise BadRequest(
                    f"sha256 of the body is {sha256}, not the {expected_sha256} given",
                    sha256=sha256,
                )
            budget = Budget(
                unpack_budget(
                    spool.size, self.limits.max_unpacked_size, self.limits.max_unpacked_ratio
                )
            )
            index = await asyncio.to_thread(
                read_package,
                str(spool.temp.path),
                spool.filename,
                budget,
                lambda index: check_index(index, spool.filename),
            )
            subdir = check_index(index, spool.filename)
            record = make_record(index, md5, sha256, spool.size)
            check_servable(spool.filename, record)
            upload = Upload(
                channel=channel.name,
                subdir=subdir,
                filename=spool.filename,
                sha256=sha256,
                size=spool.size,
                uploaded_at=0.0,
                uploaded_by=who.name,
                record=record,
            )
        except BaseException:
            spool.discard()
            raise
        return upload, spool.temp


def check_servable(filename: str, record: dict[str, Any]) -> None:
    """The last word: the record goes through the very encoders of the merged repodata.json and
    of a CEP-16 shard. check_record should make this unreachable."""
    try:
        msgspec.json.encode(record)
        shard_bytes({filename: record})
    except Exception as exc:
        raise InvalidRecord(
            f"info/index.json cannot be served in repodata: {type(exc).__name__}: {exc}"[:300]
        ) from None


async def batches(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The same bytes in batches of about 1 MiB, so each costs one worker-thread hop."""
    batch: list[bytes] = []
    pending = 0
    async for chunk in chunks:
        batch.append(chunk)
        pending += len(chunk)
        if pending >= _BATCH:
            yield b"".join(batch)
            batch, pending = [], 0
    if batch:
        yield b"".join(batch)
