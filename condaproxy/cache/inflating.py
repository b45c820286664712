"""An upstream `.zst` snapshot decompressed while it downloads (issue 14: a changed or cold
conda-forge `.zst` is 40 MB that inflate to 280 MB, and the proxy must check the document
before anyone is served it).

Without this, the check's first step (decompress to a file, ~0.3 s for conda-forge's linux-64)
starts only after the last byte has arrived. Here a thread follows the body's temp file as the
download writes it, decompresses it (never past the size limit), notes whether the document
needs its URLs rewritten, and hashes the compressed bytes, so that when the download ends only
the document check is left. Nothing is decided here: the result goes to the same build and the
same checks as a body decompressed afterwards (builds.py), and is discarded with the body if
the download fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..rules.errors import UpstreamError
from .builds import decompress_into
from .variants import temp_path

READ = 4 << 20  # bytes asked of the body file per read


@dataclass(frozen=True)
class Inflated:
    """A body's document, decompressed into `json_path` (owned by whoever claimed it)."""

    json_path: str
    needs_rewrite: bool  # `"base_url"` occurs in the document
    body_sha256: str  # of the compressed body, as stored
    body_size: int


class _Growing:
    """A file-like reader of the body file while the download appends to it: `read` blocks
    until bytes are there or the download has ended; hashes what it hands out."""

    def __init__(self, fd: int, owner: Inflating) -> None:
        self.fd = fd
        self.owner = owner
        self.offset = 0
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        want = READ if n is None or n < 0 else min(n, READ)
        with self.owner.cond:
            while self.offset >= self.owner.written and not self.owner.ended:
                self.owner.cond.wait()
            if self.owner.abandoned:
                raise _Abandoned
            available = self.owner.written - self.offset
        if available <= 0:
            return b""
        chunk = os.pread(self.fd, min(want, available), self.offset)
        self.offset += len(chunk)
        self.sha.update(chunk)
        return chunk

    def readinto(self, buffer: memoryview) -> int:  # zstandard may use either
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


class _Abandoned(Exception):
    """The download failed or the result is no longer wanted: stop and clean up."""


class Inflating:
    """Decompress the body being written to `body_fd` (the caller's temp file) in a thread of
    its own. The caller reports progress with `wrote`, then `ended` once the file is whole
    (or `discard` if the body will not be used); `result` gives the Inflated document or
    raises the UpstreamError a body decompressed afterwards would have raised."""

    def __init__(self, body_fd: int, url: str, tmp_dir: str, limit: int) -> None:
        self.cond = threading.Condition()
        self.written = 0
        self.ended = False
        self.abandoned = False
        self._claimed = False
        self._outcome: Inflated | BaseException | None = None
        self._url, self._tmp_dir, self._limit = url, tmp_dir, limit
        self._fd = os.dup(body_fd)
        loop = asyncio.get_running_loop()
        self._done: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(loop,), name="condaproxy-inflate", daemon=True
        )
        self._thread.start()

    def wrote(self, n: int) -> None:
        with self.cond:
            self.written += n
            self.cond.notify()

    def end(self) -> None:
        with self.cond:
            self.ended = True
            self.cond.notify()

    async def result(self) -> Inflated:
        await asyncio.shield(self._done)
        with self.cond:
            outcome = self._outcome
            if isinstance(outcome, BaseException):
                raise outcome
            assert outcome is not None
            self._claimed = True
            return outcome

    def discard(self) -> None:
        """The body will not be built (the download failed, a check refused it, or the build
        has run): stop the thread and delete its document unless a build claimed it."""
        with self.cond:
            self.abandoned = self.ended = True
            self.cond.notify()
            outcome, claimed = self._outcome, self._claimed
        if isinstance(outcome, Inflated) and not claimed:
            Path(outcome.json_path).unlink(missing_ok=True)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        source = _Growing(self._fd, self)
        path = temp_path(self._tmp_dir, "json")
        outcome: Inflated | BaseException
        try:
            found = decompress_into(source, path, self._url, self._limit)
            while source.read(READ):  # bytes after the last frame: hashed, refused later
                pass
            outcome = Inflated(path, found, source.sha.hexdigest(), source.offset)
        except _Abandoned:
            outcome = UpstreamError(self._url, "download did not complete")
        except BaseException as exc:  # an UpstreamError above all: the awaiting build's
            outcome = exc
        finally:
            os.close(self._fd)
        with self.cond:
            if isinstance(outcome, Inflated) and self.abandoned:
                Path(outcome.json_path).unlink(missing_ok=True)
            elif not isinstance(outcome, Inflated):
                with contextlib.suppress(OSError):
                    os.unlink(path)
            self._outcome = outcome
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody awaits
            loop.call_soon_threadsafe(_resolve, self._done)


def _resolve(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)
