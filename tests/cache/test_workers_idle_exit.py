"""Issue 14's memory floor: each server's build process (the worker process big snapshots are
checked in) exits once it has been idle for a while, so that its memory, tens of MiB after a
build, goes back to the system; the next big build starts another and is as correct. Work the
process has started always runs to its end, even when nobody waits for it any more."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

from condaproxy.cache.variants import file_sha256
from condaproxy.cache.workers import Workers

IDLE = 0.5


def _alive(pid: int) -> bool:
    """A child that exited and was reaped is gone from /proc (a zombie would still count)."""
    return Path(f"/proc/{pid}").exists()


async def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _slow_build(seconds: float, out: str) -> int:
    """A build that takes `seconds`, then writes its result: proof it ran to its end."""
    time.sleep(seconds)
    Path(out).write_text("built")
    return os.getpid()


async def test_an_idle_build_process_exits_and_the_next_build_starts_another(tmp_path: Path):
    document = tmp_path / "repodata.json"
    document.write_bytes(b'{"packages": {}}' * 1000)
    expected = hashlib.sha256(document.read_bytes()).hexdigest()
    workers = Workers()
    workers.idle_exit = IDLE
    try:
        first = await workers.run(True, os.getpid)
        assert first != os.getpid() and _alive(first)
        assert await workers.run(True, file_sha256, str(document)) == expected
        assert await _gone(first, 10 * IDLE), "the idle build process still holds its memory"

        second = await workers.run(True, os.getpid)
        assert second != first
        assert await workers.run(True, file_sha256, str(document)) == expected
    finally:
        workers.close()


async def test_a_build_in_progress_is_never_ended(tmp_path: Path):
    workers = Workers()
    workers.idle_exit = 0.05
    try:
        out = tmp_path / "long"
        pid = await workers.run(True, _slow_build, 5 * IDLE, str(out))
        assert out.read_text() == "built"

        # Its client gave up: the build goes on in the same process, to its end.
        abandoned = tmp_path / "abandoned"
        waiting = asyncio.ensure_future(workers.run(True, _slow_build, 5 * IDLE, str(abandoned)))
        await asyncio.sleep(IDLE)
        waiting.cancel()
        await asyncio.sleep(IDLE)
        assert _alive(pid), "a running build's process was ended"
        assert await workers.run(True, os.getpid) == pid, "a second process beside a busy one"
        deadline = time.monotonic() + 10 * IDLE
        while not abandoned.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert abandoned.read_text() == "built"
        assert await _gone(pid, 10 * IDLE)
    finally:
        workers.close()


async def test_a_process_started_ahead_of_a_build_waits_for_it():
    """`warm` starts the process when a big snapshot starts to arrive; the download may take
    longer than the idle period, and the build that follows must not pay the start again."""
    workers = Workers()
    workers.idle_exit, workers.warm_linger = IDLE, 20 * IDLE
    try:
        workers.warm()
        await asyncio.sleep(4 * IDLE)  # the download goes on
        assert workers._pool is not None
        warmed = list(workers._pool._processes)  # type: ignore[attr-defined]
        assert await workers.run(True, os.getpid) in warmed
        assert await _gone(warmed[0], 10 * IDLE), "after its build, the idle period applies"
    finally:
        workers.close()
