"""Accepting an upload: auth, streaming to disk with limits and checksums, reading the package,
recording it. Any refusal leaves nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import structlog

from .archive import check_filename, check_index, make_record, read_index_json
from .auth import require
from .errors import BadRequest, NotFound, PayloadTooLarge, ProxyError
from .settings import ChannelSettings, TokenSettings
from .store import BlobStore, TempBlob
from .uploads import Upload, UploadStore

log = structlog.get_logger("condaproxy.publish")

_BATCH = 1 << 20


class MirrorOnly(ProxyError):
    status = 403


def parse_bool(value: str | None, name: str) -> bool:
    if value is None or value == "":
        return False
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise BadRequest(f"query parameter '{name}' must be true or false, got {value!r}")


@dataclass
class Publisher:
    channels: Mapping[str, ChannelSettings]
    uploads: UploadStore
    temp_store: BlobStore
    max_size: int

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

    async def publish(
        self,
        channel: ChannelSettings,
        filename: str,
        body: AsyncIterator[bytes],
        who: TokenSettings,
        expected_sha256: str | None,
        force: bool,
    ) -> Upload:
        upload, temp = await self.prepare(channel, filename, body, who, expected_sha256)
        return await self.commit(upload, temp, force)

    async def commit(self, upload: Upload, temp: TempBlob, force: bool) -> Upload:
        try:
            stored = await self.uploads.add(upload, temp, force)
        except BaseException:
            temp.discard()
            raise
        log.info(
            "uploaded",
            channel=stored.channel,
            subdir=stored.subdir,
            filename=stored.filename,
            bytes=stored.size,
            by=stored.uploaded_by,
        )
        return stored

    async def prepare(
        self,
        channel: ChannelSettings,
        filename: str,
        body: AsyncIterator[bytes],
        who: TokenSettings,
        expected_sha256: str | None,
    ) -> tuple[Upload, TempBlob]:
        """Receive and check one package; nothing is recorded yet (the temp file holds it)."""
        check_filename(filename)
        if expected_sha256 is not None:
            expected_sha256 = expected_sha256.strip().lower()
            if len(expected_sha256) != 64 or any(
                c not in "0123456789abcdef" for c in expected_sha256
            ):
                raise BadRequest("query parameter 'sha256' must be 64 hex digits")
        temp = self.temp_store.new_temp()
        try:
            sha256, md5, size = await self._receive(body, temp)
            if expected_sha256 is not None and sha256 != expected_sha256:
                raise BadRequest(
                    f"sha256 of the body is {sha256}, not the {expected_sha256} given",
                    sha256=sha256,
                )
            index = await asyncio.to_thread(read_index_json, str(temp.path), filename)
            subdir = check_index(index, filename)
            upload = Upload(
                channel=channel.name,
                subdir=subdir,
                filename=filename,
                sha256=sha256,
                size=size,
                uploaded_at=0.0,
                uploaded_by=who.name,
                record=make_record(index, md5, sha256, size),
            )
        except BaseException:
            temp.discard()
            raise
        return upload, temp

    async def _receive(self, body: AsyncIterator[bytes], temp: TempBlob) -> tuple[str, str, int]:
        """Stream the body to disk in 1 MiB batches, hashing in a thread; never all in memory."""
        sha, md5 = hashlib.sha256(), hashlib.md5()
        size = 0
        batch: list[bytes] = []
        pending = 0

        def flush(chunks: list[bytes]) -> None:
            data = b"".join(chunks)
            temp.write(data)
            sha.update(data)
            md5.update(data)

        async for chunk in body:
            size += len(chunk)
            if size > self.max_size:
                raise PayloadTooLarge(
                    f"upload is larger than max_upload_size ({self.max_size} bytes)",
                    max_upload_size=self.max_size,
                )
            batch.append(chunk)
            pending += len(chunk)
            if pending >= _BATCH:
                await asyncio.to_thread(flush, batch)
                batch, pending = [], 0
        await asyncio.to_thread(flush, batch)
        return sha.hexdigest(), md5.hexdigest(), size
