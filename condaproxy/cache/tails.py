"""The readers of a download: one per client, each deciding only that client's response.

- `LocalTail` follows a download in this process (temp file, then the relay if the disk filled).
- `RemoteTail` follows a download another worker runs, through its temp file and the index.
- `PrivateStream` streams from the upstream for one client alone, when there is nothing shared
  to follow (the download is not kept and has moved on, or another worker keeps nothing).

Every reader holds back the last byte until the whole file is verified, and then also checks
the client's own X-Expected-Sha256: a client whose expectation is wrong is aborted alone.
A byte range of a miss is served once the whole file is verified (from disk); where the bytes
are not on disk, the whole file is sent instead (`ranges = False`, RFC 9110 §14.2 lets a server
ignore Range). Every reader is closed by the response that uses it (`aclose`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ..rules.errors import IntegrityError
from ..settings import ChannelSettings
from ..storage.locks import POLL_SECONDS
from .following import TapReader
from .transfer import (
    READ_CHUNK,
    SEGMENT_MOST,
    ClientAbort,
    Download,
    Expected,
    Head,
    Segment,
    check_claim,
    content_type,
    hash_chunk,
    verify,
)
from .upstream import UpstreamClient, as_identity

if TYPE_CHECKING:
    from .downloads import Downloads

_ids = itertools.count()


class LocalTail:
    """Follows a download of this process. Registered (and its descriptor taken) when the
    client joins, so the bytes stay readable whatever the download does meanwhile.

    A byte range waits for the whole file to be verified. If the disk stops taking bytes
    before that, the range is fetched on its own: waiting in the relay's window would hold
    the window, and with it every other client of the download, until the end."""

    def __init__(
        self, d: Download, claim: str | None, fallback: Callable[[], PrivateStream]
    ) -> None:
        self.d = d
        self.claim = claim
        self.fallback = fallback
        self.private: PrivateStream | None = None
        self.id = next(_ids)
        d.readers[self.id] = 0
        self.fd = os.dup(d.temp.fd) if d.temp is not None and d.temp.fd >= 0 else None
        self.ranges = d.relay is None  # the bytes are on disk: a range can wait for them
        self.zero_copy = False  # set by a response that can send a Segment by sendfile

    async def chunks(self, start: int, end: int | None) -> AsyncIterator[bytes | Segment]:
        d = self.d
        size = (await asyncio.shield(d.head)).size
        partial = start > 0 or (end is not None and end != size)
        offset = start
        while end is None or offset < end:
            if self.id in d.cut:
                raise ClientAbort(f"{d.key}: this client stopped reading while the disk was full")
            if partial and d.relay is not None and not d.verified:
                self._leave()
                self.private = self.fallback()
                async for chunk in self.private.chunks(start, end):
                    yield chunk
                return
            if d.verified:
                check_claim(d.key, d.sha256, self.claim)
                limit = d.written
            elif partial:
                limit = offset  # a range waits until the whole file is verified
            else:
                limit = d.written - 1  # hold back the last byte
            if end is not None:
                limit = min(limit, end)
            if offset < limit:
                piece = self._read(offset, limit)
                offset += len(piece)
                d.readers[self.id] = offset
                if d.relay is not None:
                    d.relay.trim(d.slowest())
                yield piece
                continue
            if d.error is not None and not d.verified:
                raise ClientAbort(f"download of {d.key} failed: {d.error}")
            if d.verified:
                return
            await d.wait()

    def _read(self, offset: int, limit: int) -> bytes | Segment:
        d = self.d
        chunk = b""
        if d.buffer is not None:
            chunk = bytes(memoryview(d.buffer)[offset : min(limit, offset + READ_CHUNK)])
        elif offset < d.disk_end and self.fd is not None and self.zero_copy:
            return Segment(self.fd, offset, min(SEGMENT_MOST, min(limit, d.disk_end) - offset))
        elif offset < d.disk_end and self.fd is not None:
            chunk = os.pread(self.fd, min(READ_CHUNK, min(limit, d.disk_end) - offset), offset)
        elif offset >= d.disk_end and d.relay is not None:
            chunk = d.relay.read(offset, min(limit, offset + READ_CHUNK))
        if not chunk:
            raise ClientAbort(f"{d.key}: bytes from {offset} are no longer available")
        return chunk

    def _leave(self) -> None:
        """Stop counting as a reader: the relay's window no longer waits for this one."""
        self.d.readers.pop(self.id, None)
        if self.d.relay is not None:
            self.d.relay.trim(self.d.slowest())
        self.d.stop_if_unread()

    async def aclose(self) -> None:
        self._leave()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.private is not None:
            await self.private.aclose()


class PrivateStream:
    """One upstream request for one client: hashed whole, verified against the channel and the
    client's claim, the last byte held back. Nothing is kept."""

    ranges = False

    def __init__(
        self,
        upstream: UpstreamClient,
        channel: ChannelSettings,
        url: str,
        expected: Expected,
        claim: str | None,
        key: str,
    ) -> None:
        self.upstream, self.channel, self.url = upstream, channel, url
        self.expected, self.claim, self.key = expected, claim, key
        self._stack = contextlib.AsyncExitStack()
        self._response: Any = None

    async def open(self) -> Head:
        response = await self._stack.enter_async_context(
            self.upstream.open(self.channel, self.url, headers={"accept-encoding": "identity"})
        )
        self._response = response = as_identity(response, self.expected.size)
        size, expected = response.content_length, self.expected
        if expected.size is not None and size is not None and size != expected.size:
            await self.aclose()
            raise IntegrityError(
                response.url, f"size {size} differs from the {expected.size} the channel lists"
            )
        size = expected.size if expected.size is not None else size
        return Head(size, content_type(self.key), expected.sha256)

    async def chunks(self, start: int, end: int | None, sent: Any = None) -> AsyncIterator[bytes]:
        """Bytes [start, end) of the file; the whole body is read and hashed regardless.
        `sent` is the sha256 of bytes [0, start) the client already has from elsewhere: this
        fetch must agree with them, or the client is aborted."""
        if self._response is None:
            await self.open()
        response = self._response
        sha = hashlib.sha256()
        md5 = hashlib.md5() if self.expected.md5 and not self.expected.sha256 else None
        offset = 0
        held = b""
        async for chunk in response.iter_bytes():
            begin = offset
            if sent is not None and begin <= start < begin + len(chunk):
                await asyncio.to_thread(hash_chunk, chunk[: start - begin], sha, md5)
                if sha.digest() != sent.digest():
                    raise ClientAbort(f"{self.key}: the upstream's bytes changed between fetches")
                sent = None
                await asyncio.to_thread(hash_chunk, chunk[start - begin :], sha, md5)
            else:
                await asyncio.to_thread(hash_chunk, chunk, sha, md5)
            offset = begin + len(chunk)
            lo, hi = max(begin, start), offset if end is None else min(offset, end)
            if lo < hi:
                out = held + chunk[lo - begin : hi - begin]
                held, out = out[-1:], out[:-1]  # hold back the last byte sent so far
                if out:
                    yield out
        size = self.expected.size if self.expected.size is not None else response.content_length
        verify(response.url, offset, sha, md5, self.expected, size)
        check_claim(self.key, sha.hexdigest(), self.claim)
        if held:
            yield held

    async def aclose(self) -> None:
        await self._stack.aclose()


class RemoteTail:
    """Follows another worker's download through its temp file; the index entry written after
    the commit releases the last byte (and a byte range). If the other worker stops keeping the
    file (disk full) or its download ends without an entry, this client streams on its own from
    where it was."""

    ranges = True

    def __init__(
        self,
        downloads: Downloads,
        key: str,
        temp_path: str,
        claim: str | None,
        fallback: Callable[[], PrivateStream],
        size: int | None,
    ) -> None:
        self.downloads, self.key, self.claim = downloads, key, claim
        self.fallback = fallback
        self.size = size  # of the whole file, from the other worker's head
        self.private: PrivateStream | None = None
        self.fd: int | None = None
        self.zero_copy = False  # set by a response that can send a Segment by sendfile
        try:
            self.fd = os.open(temp_path, os.O_RDONLY)
        except FileNotFoundError:
            entry = downloads.cached(key)
            if entry is not None:
                self.fd = downloads.store.open(entry.sha256)

    async def chunks(self, start: int, end: int | None) -> AsyncIterator[bytes | Segment]:
        downloads, key = self.downloads, self.key
        partial = start > 0 or (end is not None and end != self.size)
        offset = start
        sent = hashlib.sha256()  # what this client got from the other worker's temp file
        while self.fd is not None:
            entry = downloads.index.get_file(key)
            if entry is not None:
                check_claim(key, entry.sha256, self.claim)
            available = os.fstat(self.fd).st_size
            limit = available if entry is not None else available - 1
            if partial and entry is None:
                limit = offset
            if end is not None:
                limit = min(limit, end)
            if offset < limit and self.zero_copy:
                # Hashed, if need be, only when the other worker gives up: the bytes sent
                # stay in the file as they were (it is written once, in order).
                segment = Segment(self.fd, offset, min(SEGMENT_MOST, limit - offset))
                offset += segment.count
                yield segment
                continue
            if offset < limit:
                chunk = os.pread(self.fd, min(READ_CHUNK, limit - offset), offset)
                offset += len(chunk)
                if entry is None:
                    sent.update(chunk)
                yield chunk
                continue
            if entry is not None and offset >= (end if end is not None else entry.size):
                return
            if entry is None and self._other_gave_up():
                if downloads.index.get_file(key) is not None:
                    continue
                break
            await asyncio.sleep(POLL_SECONDS)
        # Not kept over there: the rest comes from our own fetch, which must agree with what
        # the client already has (a range got nothing yet: it waits for the whole file).
        if self.zero_copy and self.fd is not None and offset > start:
            sent = await asyncio.to_thread(_sha256_of, self.fd, start, offset)
        self.private = self.fallback()
        async for chunk in self.private.chunks(offset, end, sent if offset > start else None):
            yield chunk

    def _other_gave_up(self) -> bool:
        if not self.downloads.locks.is_held("dl:" + self.key):
            return True
        return self.downloads.remote_mode(self.key) == "memory"

    async def aclose(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.private is not None:
            await self.private.aclose()


def _sha256_of(fd: int, start: int, end: int) -> Any:
    """The running sha256 of [start, end) of `fd` (what a client was sent from it)."""
    digest = hashlib.sha256()
    while start < end:
        chunk = os.pread(fd, min(READ_CHUNK, end - start), start)
        if not chunk:
            raise ClientAbort("the other worker's file shrank under this client")
        digest.update(chunk)
        start += len(chunk)
    return digest


Body = LocalTail | RemoteTail | PrivateStream | TapReader
