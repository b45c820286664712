"""The worker process that builds big documents yields the CPU to the serving process: its
seconds of decompression and compression must not starve the event loop on a 2-core node."""

from __future__ import annotations

import os

from condaproxy.cache.workers import WORKER_NICENESS, Workers


async def test_big_builds_run_below_the_servers_cpu_priority():
    workers = Workers()
    try:
        inside = await workers.run(True, os.nice, 0)  # os.nice(0): the caller's niceness
        in_thread = await workers.run(False, os.nice, 0)
    finally:
        workers.close()
    assert inside == min(os.nice(0) + WORKER_NICENESS, 19)
    assert in_thread == os.nice(0), "the server's own threads keep its priority"
