"""The relay window: bytes a full disk could not take, held in memory for the readers of a
download, bounded by the slowest of them."""

from __future__ import annotations

import asyncio

from condaproxy.cache.relay import Relay


async def test_reads_come_from_the_chunks_the_window_holds():
    relay = Relay(start=100)
    for chunk in (b"abc", b"defg"):
        await relay.put(chunk, lambda: 100, lambda offset: None)
    assert (relay.start, relay.base, relay.end) == (100, 100, 107)
    assert relay.read(100, 107) == b"abc", "at most one chunk's worth"
    assert relay.read(101, 102) == b"b"
    assert relay.read(104, 107) == b"efg"
    assert relay.read(107, 110) == b"", "nothing past the end"


async def test_trimming_past_the_start_closes_the_window_to_late_readers():
    relay = Relay(start=0)
    await relay.put(b"abc", lambda: 0, lambda offset: None)
    await relay.put(b"def", lambda: 0, lambda offset: None)
    assert relay.complete_from_start
    relay.trim(2)  # every reader is inside the first chunk: it stays
    assert relay.complete_from_start and relay.read(0, 1) == b"a"
    relay.trim(3)
    assert not relay.complete_from_start and relay.base == 3
    assert relay.read(3, 6) == b"def"


async def test_the_producer_waits_while_the_slowest_reader_is_a_window_behind():
    relay = Relay(start=0, limit=10)
    reader = {"at": 0}
    await relay.put(b"x" * 8, lambda: reader["at"], lambda offset: None)
    producer = asyncio.create_task(relay.put(b"y" * 8, lambda: reader["at"], lambda offset: None))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not producer.done(), "16 bytes past the slowest reader: more than the window"
    reader["at"] = 8
    relay.trim(8)
    await asyncio.wait_for(producer, 5)
    assert relay.base == 8 and relay.read(8, 16) == b"y" * 8
