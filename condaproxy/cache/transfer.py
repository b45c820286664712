"""The state of one download and the pure rules it is checked by: what the channel publishes
for a file, what is known before the body, and when bytes may go out."""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass, field

from ..rules.errors import DISK_FULL, IntegrityError
from ..storage.blobs import TempBlob
from ..storage.index import FileEntry
from .relay import Relay

# What a client's reader takes at once: a piece a client that stops reading pins in memory
# (web/responses.send_pieces), so a quarter MiB rather than the upstream's 1 MiB chunks.
READ_CHUNK = 256 << 10


# What one Segment may span: a client's response goes on in steps of at most this much, so
# other clients of the worker get their turn between them.
SEGMENT_MOST = 4 << 20


@dataclass(frozen=True)
class Segment:
    """Bytes a reader may send as they lie in a file, without reading them (by sendfile,
    web/zerocopy.py): [offset, offset + count) of `fd`, a descriptor the reader keeps open
    until it is closed. Only the response of a server that offers zero-copy sending asks for
    them (a reader's `zero_copy`); everyone else gets bytes."""

    fd: int
    offset: int
    count: int

    def __len__(self) -> int:
        return self.count


def bytes_of(chunk: bytes | Segment) -> bytes:
    """A reader's chunk as bytes (a Segment read from its file)."""
    if isinstance(chunk, bytes):
        return chunk
    data = os.pread(chunk.fd, chunk.count, chunk.offset)
    if len(data) != chunk.count:
        raise OSError("file shrank while being read")
    return data


@dataclass(frozen=True)
class Expected:
    """What the channel publishes for a file; any field may be unknown. Only a `listed` file
    (from a record, or a shard's name) is ever cached."""

    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    listed: bool = True


@dataclass(frozen=True)
class Head:
    """What is known before the body: enough to send response headers."""

    size: int | None
    content_type: str
    sha256: str | None


@dataclass
class Download:
    """A download in this process: where its bytes are, and who is waiting on them."""

    key: str
    temp: TempBlob | None  # None: in memory (`buffer`), or nothing is kept (`relay`)
    head: asyncio.Future[Head]
    buffer: bytearray | None = None  # a small file, whole in memory; committed once verified
    counted: int = 0  # bytes of `buffer` counted against the memory budget
    written: int = 0  # bytes received, hashed and readable
    disk_end: int = 0  # bytes readable from the temp file; the rest is in `relay`
    relay: Relay | None = None
    verified: bool = False  # size and checksum matched: the last byte may go out
    sha256: str | None = None  # of the whole body, once verified
    announced: bool = False  # an in-flight note tells other workers about it (inflight.py)
    entry: FileEntry | None = None
    error: BaseException | None = None
    readers: dict[int, int] = field(default_factory=dict)  # reader id -> offset
    cut: set[int] = field(default_factory=set)  # readers dropped for not reading (relay.py)
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # committed or failed
    task: asyncio.Task[None] | None = None  # the one task that runs it
    abandoned: bool = False  # stopped: it kept nothing, and its last reader left
    _progress: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        event, self._progress = self._progress, asyncio.Event()
        event.set()

    async def wait(self) -> None:
        await self._progress.wait()

    def joinable(self) -> bool:
        """A new reader can get every byte from 0: from the temp file, and from the relay
        only while it still holds all it was given."""
        return self.relay is None or self.relay.complete_from_start

    @property
    def kept(self) -> bool:
        """Whether the file will be cached once verified (on disk, or small in memory)."""
        return self.relay is None

    def stop_if_unread(self) -> None:
        """A download that keeps nothing (a file no record lists, or no room on disk) runs
        for its readers alone: once the last one has left (a HEAD, a client that hung up),
        it stops, instead of pulling the rest of the file from upstream for nobody. A kept
        one carries on into the cache."""
        if self.kept or self.readers or self.verified or self.error is not None:
            return
        if self.task is not None and not self.task.done():
            self.abandoned = True
            self.task.cancel()

    def cut_off(self, below: int) -> None:
        """Drop the readers behind `below`: the relay no longer waits for them."""
        for reader, offset in list(self.readers.items()):
            if offset < below:
                del self.readers[reader]
                self.cut.add(reader)

    def slowest(self) -> int:
        floor = self.relay.start if self.relay is not None else 0
        return min((max(o, floor) for o in self.readers.values()), default=self.written)


class AlreadyCached(Exception):
    def __init__(self, entry: FileEntry) -> None:
        super().__init__(entry.sha256)
        self.entry = entry


class ClientAbort(Exception):
    """The body cannot be completed: the client's connection must be aborted."""


def check_claim(key: str, sha256: str | None, claim: str | None) -> None:
    """A client's own X-Expected-Sha256 decides only its own response."""
    if claim is not None and sha256 is not None and sha256 != claim:
        raise ClientAbort(f"{key}: sha256 {sha256} differs from the X-Expected-Sha256 {claim}")


def hash_chunk(chunk: bytes | bytearray, sha: hashlib._Hash, md5: hashlib._Hash | None) -> None:
    sha.update(chunk)
    if md5 is not None:
        md5.update(chunk)


def hash_and_write(
    temp: TempBlob, chunk: bytes, sha: hashlib._Hash, md5: hashlib._Hash | None
) -> bool:
    """Hash the chunk and append it to the temp file; False if the disk is full."""
    hash_chunk(chunk, sha, md5)
    try:
        temp.write(chunk)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            return False
        raise
    return True


def verify(
    url: str,
    written: int,
    sha: hashlib._Hash,
    md5: hashlib._Hash | None,
    expected: Expected,
    size: int | None,
) -> None:
    if size is not None and written != size:
        raise IntegrityError(url, f"body ended after {written} of {size} bytes")
    if expected.sha256 and sha.hexdigest() != expected.sha256.lower():
        raise IntegrityError(url, f"sha256 {sha.hexdigest()} differs from {expected.sha256}")
    if md5 is not None and expected.md5 and md5.hexdigest() != expected.md5.lower():
        raise IntegrityError(url, f"md5 {md5.hexdigest()} differs from {expected.md5}")


def content_type(key: str) -> str:
    if key.endswith(".tar.bz2"):
        return "application/x-tar"
    return "application/octet-stream"
