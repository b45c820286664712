"""Per-key locks within one process and across workers (two KeyedLocks over one directory
stand for two workers: flock holds between open file descriptions, even in one process)."""

from __future__ import annotations

import asyncio

from condaproxy.storage.locks import KeyedLocks, release


async def test_a_key_is_held_by_one_worker_at_a_time(tmp_path):
    one, two = KeyedLocks(tmp_path), KeyedLocks(tmp_path)
    fd = one.try_acquire("k")
    assert fd is not None
    assert two.try_acquire("k") is None and two.is_held("k")
    assert two.try_acquire("other") is not None
    release(fd)
    assert not two.is_held("k")


async def test_hold_queues_waiters_in_this_process_and_polls_other_workers(tmp_path):
    one, two = KeyedLocks(tmp_path), KeyedLocks(tmp_path)
    order: list[str] = []

    async def section(locks: KeyedLocks, name: str, gate: asyncio.Event | None) -> None:
        async with locks.hold("k"):
            order.append(f"{name} in")
            if gate is not None:
                await gate.wait()
            order.append(f"{name} out")

    gate = asyncio.Event()
    first = asyncio.create_task(section(one, "a", gate))
    await asyncio.sleep(0)
    waiters = [
        asyncio.create_task(section(one, "b", None)),  # same worker: queues on the asyncio lock
        asyncio.create_task(section(two, "c", None)),  # other worker: polls the flock
    ]
    await asyncio.sleep(0)
    assert order == ["a in"]
    gate.set()
    await asyncio.wait_for(asyncio.gather(first, *waiters), 10)
    assert order[:2] == ["a in", "a out"]
    assert sorted(order[2:]) == ["b in", "b out", "c in", "c out"]
    assert one._local == {} and one._users == {}, "idle keys leave nothing behind"
