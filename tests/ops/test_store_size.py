"""`condaproxy_store_bytes` is read from the index at a scrape (ops/metrics.StoreSize): a
reading walks every cached entry, seconds at 200,000 files, in a thread that takes the GIL from
the requests. However often scrapes come, readings take at most a tenth of the worker's time;
a small cache is read as often as before (after this worker's commits, at most once a second)."""

from __future__ import annotations

from condaproxy.cache.instruments import Metrics
from condaproxy.ops.metrics import StoreSize


class World:
    def __init__(self, cost: float) -> None:
        self.now, self.cost, self.changes, self.readings = 0.0, cost, 0, 0

    def clock(self) -> float:
        return self.now

    def usage(self) -> dict[str, dict[str, int]]:
        self.readings += 1
        self.now += self.cost  # the walk of the index takes this long
        return {"ch": {"files": 1, "bytes": 100 * self.readings}}


async def scrapes(world: World, seconds: float, every: float, commits: bool) -> int:
    size = StoreSize(Metrics(), world.usage, lambda: world.changes, clock=world.clock)
    end = world.now + seconds
    while world.now < end:
        if commits:
            world.changes += 1  # this worker cached a file since the last scrape
        await size.refresh()
        world.now += every
    return world.readings


async def test_a_big_index_is_read_at_most_a_tenth_of_the_time() -> None:
    world = World(cost=2.0)
    await scrapes(world, 600, every=1.0, commits=True)
    busy = world.readings * world.cost
    assert busy <= 0.1 * 600 + world.cost, (world.readings, busy)
    assert world.readings >= 2, "never read again"


async def test_a_small_index_follows_commits_at_once() -> None:
    world = World(cost=0.001)
    await scrapes(world, 20, every=1.0, commits=True)
    assert world.readings >= 18, world.readings
    quiet = World(cost=0.001)
    await scrapes(quiet, 60, every=1.0, commits=False)
    assert 5 <= quiet.readings <= 8, quiet.readings  # every max_age (10 s) without commits
