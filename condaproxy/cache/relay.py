"""Bytes of a download that the disk could not take, held in a bounded window in memory.

When the cache's disk is below `min_free` as a download starts, or fills up while it runs, the
download carries on for the clients it already has: bytes from then on go through this window
instead of the temp file. Readers register their offsets; the producer waits while the window
holds more than `limit` bytes beyond the slowest of them, so memory stays bounded (a slow reader
slows the others only in this degraded mode). A reader that arrives after the window has moved
past the start can no longer be served from it and streams on its own.

A slow reader is waited for; a reader that stops reading is not: when no reader has moved for
`stall` seconds while the window is full, the readers more than the window behind are cut off
(their connections are aborted), so one client cannot stop a download for all the others.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

WINDOW = 16 << 20
STALL = 30.0  # seconds a full window waits for any reader to move


class Relay:
    def __init__(self, start: int, limit: int = WINDOW, stall: float = STALL) -> None:
        self.start = start  # the offset where the disk stopped taking bytes
        self.base = start  # offset of chunks[0]
        self.end = start
        self.limit = limit
        self.stall = stall
        self._chunks: deque[bytes] = deque()
        self._room = asyncio.Event()

    @property
    def complete_from_start(self) -> bool:
        """Whether every byte since `start` is still held (a late reader can still join)."""
        return self.base == self.start

    def read(self, offset: int, stop: int) -> bytes:
        """Bytes from `offset` (held by the window) up to `stop`, at most one chunk's worth."""
        position = self.base
        for chunk in self._chunks:
            if offset < position + len(chunk):
                begin = offset - position
                return chunk[begin : begin + (stop - offset)]
            position += len(chunk)
        return b""

    async def put(
        self, chunk: bytes, slowest: Callable[[], int], cut_off: Callable[[int], None]
    ) -> None:
        """Hold `chunk`, then wait while the window is full. `cut_off(offset)` drops the
        readers behind `offset` when none has moved for `stall` seconds."""
        self._chunks.append(chunk)
        self.end += len(chunk)
        self.trim(slowest())
        while self.end - max(slowest(), self.base) > self.limit:
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), self.stall)
            except TimeoutError:
                cut_off(self.end - self.limit)
            self.trim(slowest())

    def trim(self, slowest: int) -> None:
        """Drop chunks every reader is past; wake a waiting producer."""
        while self._chunks and self.base + len(self._chunks[0]) <= slowest:
            self.base += len(self._chunks.popleft())
        self._room.set()
