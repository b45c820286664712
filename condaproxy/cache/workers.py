"""Where work off the event loop runs.

- `run`: heavy metadata work: a thread for small documents, a separate process for big ones, so
  decoding or scanning hundreds of megabytes never holds the event loop's GIL. That process
  exits once it has had no work for `idle_exit` seconds (issue 14: the anonymous memory of the
  whole tree, which each server's idle build process would otherwise hold for ever); the next
  big build, or `warm`, starts another. Work it has started always runs to its end. A process
  that dies under its work (killed, out of memory, SIGBUS on a file cut short under its map) is
  replaced at once and the work runs again in the new one; dying twice is a 503 naming it.
- `io`: the download pipeline's hashing and writing (hashlib and os.write release the GIL), in
  threads of its own.
- `durable`: fsync, rename and directory fsync of finished downloads, in threads of their own, so
  a slow disk flush never queues the bytes clients are waiting for behind it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import structlog

from ..rules.errors import ServiceUnavailable
from .heap import give_back_big_buffers

log = structlog.get_logger("condaproxy.cache.workers")

T = TypeVar("T")
BIG = 8 << 20  # bytes of input from which work goes to the worker process


IO_THREADS = 8
DURABLE_THREADS = 2


WORKER_NICENESS = 10
IDLE_EXIT = 5.0  # seconds without work after which the worker process exits
WARM_LINGER = 60.0  # ... when it was started ahead of a build (`warm`) that has not come yet


def _below_the_server() -> None:
    """The worker process yields the CPU to the server's event loop: a build of a big document
    (seconds of CPU) must not starve the requests being served meanwhile (2 cores are common).
    Like the servers, it gives the big buffers of a build back once they are freed."""
    os.nice(WORKER_NICENESS)
    give_back_big_buffers()


def _ready() -> None:
    """What the worker process runs first when warmed: the imports of the builds it is for."""
    from . import builds  # noqa: F401


class Workers:
    idle_exit = IDLE_EXIT
    warm_linger = WARM_LINGER

    def __init__(self) -> None:
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._busy = 0  # submitted to the worker process and not finished there
        self._idle: asyncio.TimerHandle | None = None
        self._io: concurrent.futures.ThreadPoolExecutor | None = None
        self._durable: concurrent.futures.ThreadPoolExecutor | None = None

    async def io(self, fn: Callable[..., T], *args: Any) -> T:
        if self._io is None:
            self._io = concurrent.futures.ThreadPoolExecutor(IO_THREADS, "condaproxy-io")
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def durable(self, fn: Callable[..., T], *args: Any) -> T:
        if self._durable is None:
            self._durable = concurrent.futures.ThreadPoolExecutor(
                DURABLE_THREADS, "condaproxy-durable"
            )
        return await asyncio.get_running_loop().run_in_executor(self._durable, fn, *args)

    async def run(self, big: bool, fn: Callable[..., T], *args: Any) -> T:
        if not big:
            return await asyncio.to_thread(fn, *args)
        for attempt in (1, 2):
            try:
                return await asyncio.wrap_future(self._submit(fn, *args))
            except BrokenProcessPool:
                # Before: the dead pool stayed, and every big build failed with a 500 until it
                # was retired (idle_exit later), the one under way included.
                log.warning("build process died", work=fn.__name__, attempt=attempt)
        raise ServiceUnavailable(
            f"the build process died twice under this request's work ({fn.__name__}); "
            "retry later (the cause is in the proxy's log)"
        )

    def warm(self) -> None:
        """Start the worker process now, without waiting: a caller that will soon need it (a
        big snapshot has started to arrive) overlaps its start-up, about 0.7 s of spawning
        and importing on a 2-core machine, with the download instead of paying it after.
        It waits up to `warm_linger` seconds for that build: a slow download takes a while."""
        if self._pool is None:
            self._submit(_ready, linger=self.warm_linger)

    def _submit(
        self, fn: Callable[..., T], *args: Any, linger: float = 0.0
    ) -> concurrent.futures.Future[T]:
        """Work for the worker process, counted until the process has finished it (not until
        its awaiter stops waiting: a cancelled request leaves the build running)."""
        loop = asyncio.get_running_loop()
        pool = self._process()
        try:
            future = pool.submit(fn, *args)
        except BrokenProcessPool:  # died while idle, or under another request's work
            self._drop(pool)
            pool = self._process()
            future = pool.submit(fn, *args)
        self._busy += 1
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        wait = max(linger, self.idle_exit)
        future.add_done_callback(lambda done: _call_soon(loop, self._finished, wait, pool, done))
        return future

    def _drop(self, pool: concurrent.futures.ProcessPoolExecutor) -> None:
        """A pool whose process died: the next work starts another."""
        if self._pool is pool:
            self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def _finished(
        self,
        wait: float,
        pool: concurrent.futures.ProcessPoolExecutor,
        done: concurrent.futures.Future[Any],
    ) -> None:
        self._busy -= 1
        if not done.cancelled() and isinstance(done.exception(), BrokenProcessPool):
            self._drop(pool)
        if self._busy == 0 and self._pool is not None and self._idle is None:
            self._idle = asyncio.get_running_loop().call_later(wait, self._retire)

    def _retire(self) -> None:
        """No work for `idle_exit` seconds: let the process exit (it has nothing running)."""
        self._idle = None
        if self._busy == 0 and self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=False)

    def _process(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the server process has threads and open sockets.
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_below_the_server,
            )
        return self._pool

    def close(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        for pool in (self._pool, self._io, self._durable):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    """From the executor's thread; nothing to do once the loop is gone (shutdown)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)
