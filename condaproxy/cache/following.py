"""A metadata refresh followed while it arrives: the upstream's new `repodata.json.zst` goes to
the client that asked for it as its bytes land, instead of after the whole snapshot has been
downloaded, decompressed, checked and adopted (issue 14: first byte after an upstream change).

The rule that keeps it safe is the packages' rule (tails.py): the last byte is held back until
the refresh has adopted the snapshot, and goes out only if the adopted `.zst` variant is
exactly the bytes sent (its sha256 and size). A body the build refuses, rewrites (CEP-15
`base_url`) or that fails midway aborts the response, so a client never completes a document
the proxy would not serve. The response carries no ETag (the digest is known only at the end);
the next request gets the stored snapshot's.

`Tap` is what the refresh reports into; `TapReader` is one client's reader of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .transfer import READ_CHUNK, ClientAbort

if TYPE_CHECKING:
    from .metadata import Served


class Tap:
    """The body of one refresh as it is written to its temp file. `started` resolves when a
    200 body begins (with the upstream's Content-Length, or None); `done` with the adopted
    snapshot, or the refresh's error."""

    def __init__(self, variant: str) -> None:
        loop = asyncio.get_running_loop()
        self.variant = variant  # the snapshot variant the body must equal, byte for byte
        self.started: asyncio.Future[int | None] = loop.create_future()
        self.done: asyncio.Future[Served] = loop.create_future()
        self.fd: int | None = None
        self.written = 0
        self._progress = asyncio.Event()

    def begin(self, fd: int, size: int | None) -> None:
        self.fd = os.dup(fd)  # readable whatever happens to the temp file's name
        if not self.started.done():
            self.started.set_result(size)

    def wrote(self, n: int) -> None:
        self.written += n
        self._wake()

    def finish(self, served: Served | None, error: BaseException | None) -> None:
        if not self.done.done():
            if error is not None:
                self.done.set_exception(error)
                self.done.exception()  # retrieved: nobody may be reading
            else:
                self.done.set_result(served)  # type: ignore[arg-type]
        if not self.started.done():
            self.started.set_result(None)
        self._wake()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _wake(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    async def wait(self) -> None:
        await self._progress.wait()


class TapReader:
    """One client's reader of a tap: every byte but the last as it arrives; the last once the
    adopted variant is proven to be what was sent."""

    ranges = False  # the whole body, never a range (RFC 9110 §14.2)

    def __init__(self, tap: Tap, key: str) -> None:
        self.tap = tap
        self.key = key
        self.fd = os.dup(tap.fd) if tap.fd is not None else None
        self.sha = hashlib.sha256()

    async def chunks(self, start: int, end: int | None) -> AsyncIterator[bytes]:
        tap, offset = self.tap, 0
        while True:
            finished = tap.done.done()
            limit = tap.written if finished else tap.written - 1
            if offset < limit:
                assert self.fd is not None
                chunk = os.pread(self.fd, min(READ_CHUNK, limit - offset), offset)
                if not chunk:
                    raise ClientAbort(f"{self.key}: the refreshed body is no longer readable")
                if finished:
                    self._check(offset + len(chunk), chunk)
                self.sha.update(chunk)
                offset += len(chunk)
                yield chunk
                continue
            if finished:
                self._check(offset, b"")
                return
            await tap.wait()

    def _check(self, end: int, last: bytes) -> None:
        """Before the bytes that complete the body: the refresh succeeded and adopted exactly
        them as the variant clients are served."""
        error = self.tap.done.exception()
        if error is not None:
            raise ClientAbort(f"{self.key}: refresh failed: {error}")
        if end < self.tap.written:
            return
        variant = self.tap.done.result().entry.variants.get(self.tap.variant)
        whole = self.sha.copy()
        whole.update(last)
        if variant is None or variant.size != end or variant.sha256 != whole.hexdigest():
            raise ClientAbort(f"{self.key}: the snapshot adopted is not the body sent")

    async def aclose(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
