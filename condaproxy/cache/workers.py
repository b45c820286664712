"""Where heavy metadata work runs: a thread for small documents, a separate process for big
ones, so decoding or scanning hundreds of megabytes never holds the event loop's GIL."""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
BIG = 8 << 20  # bytes of input from which work goes to the worker process


class Workers:
    def __init__(self) -> None:
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    async def run(self, big: bool, fn: Callable[..., T], *args: Any) -> T:
        if not big:
            return await asyncio.to_thread(fn, *args)
        if self._pool is None:
            # spawn, not fork: the server process has threads and open sockets.
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
