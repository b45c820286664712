"""Issue 14's memory floor: memory a server or a build process freed goes back to the system.

glibc's default malloc keeps freed big blocks in its heaps after it has seen one big block
freed (its thresholds follow the biggest), in every thread's arena: each server grew by tens of
MiB over a benchmark, and a build process kept a build's buffers until it exited. These run the
pattern that caused it (big reads freed while small objects stay) in the processes the proxy
runs: a build process, and a server worker as `condaproxy serve --workers N` makes it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from condaproxy.cache.workers import Workers
from condaproxy.settings import CONFIG_ENV
from tests.support.processes import write_config

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20
KEPT = 16 * MiB  # what may stay after 120 MiB were allocated and freed


def _anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon")


def _read_and_free() -> int:
    """Bytes of anonymous memory still held after a build-like burst of 4 MiB reads (one freed
    first, as any earlier read was) while small objects stay alive between them."""
    before = _anon()
    first = bytearray(4 * MiB)
    del first
    chunks, kept = [], []
    for _ in range(30):
        chunk = bytearray(4 * MiB)
        chunk[::4096] = b"x" * len(chunk[::4096])  # touched, as read bytes are
        chunks.append(chunk)
        kept.append(bytearray(3000))
    del chunks
    return _anon() - before


def _in_a_thread() -> int:
    out: list[int] = []
    thread = threading.Thread(target=lambda: out.append(_read_and_free()))
    thread.start()
    thread.join()
    return out[0]


async def test_a_build_process_gives_back_what_a_build_freed():
    workers = Workers()
    try:
        held = await workers.run(True, _read_and_free)
        again = await workers.run(True, _read_and_free)
    finally:
        workers.close()
    assert held < KEPT, f"the build process kept {held / MiB:.0f} MiB it had freed"
    assert again < KEPT


def test_a_server_worker_gives_back_what_its_threads_freed(tmp_path: Path):
    config = write_config(
        tmp_path / "proxy.toml", tmp_path / "cache", {"c": {"upstream": "http://127.0.0.1:9"}}
    )
    script = (
        "from condaproxy.cli import app_factory\n"
        "from tests.cache.test_heap_returned import _in_a_thread\n"
        "app_factory()\n"
        "print(_in_a_thread())\n"
    )
    env = {**os.environ, CONFIG_ENV: str(config), "PYTHONPATH": str(ROOT)}
    env.pop("GLIBC_TUNABLES", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    held = int(done.stdout.split()[-1])
    assert held < KEPT, f"a server kept {held / MiB:.0f} MiB its threads had freed"
