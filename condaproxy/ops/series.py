"""A small time series of what each channel served, for the status page's chart: once a minute
the counters of every worker (ops/metrics.channel_counts) are sampled into the index, so every
worker reads the same series and a restart keeps the last hour.

Invariants: at most `KEEP` samples are kept (an hour of minutes and the one before it); one
sample per `INTERVAL` whichever worker takes it (the check and the write are one index
transaction); counters only grow, so a value lower than the previous sample's means the
server restarted and the new value is the whole delta.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from ..cache.instruments import Metrics
from ..storage.index import Index
from .metrics import channel_counts

log = structlog.get_logger("condaproxy.ops.series")

SERIES_KEY = ("status", "series")
INTERVAL = 60.0
KEEP = 61
# Per channel, in this order: served from the cache, fetched upstream, body bytes sent,
# upstream errors, stale serves.
FIELDS = ("cache", "upstream", "bytes", "errors", "stale")
_CACHE = ("hit", "revalidated", "stale")  # as the access log counts bytes from the cache
_UPSTREAM = ("miss", "coalesced")


def current_counts(metrics: Metrics) -> dict[str, list[float]]:
    """Per channel, the FIELDS totals since the server started (every worker summed)."""
    out = {}
    for channel, c in channel_counts(metrics).items():
        out[channel] = [
            sum(c.get(k, 0.0) for k in _CACHE),
            sum(c.get(k, 0.0) for k in _UPSTREAM),
            c.get("bytes_served", 0.0),
            c.get("upstream_errors", 0.0),
            c.get("stale", 0.0),
        ]
    return out


def record_sample(index: Index, counts: dict[str, list[float]], now: float) -> bool:
    """Append one sample unless another worker took one less than an interval ago."""
    with index.transact():
        series: list[dict[str, Any]] = index.get_value(SERIES_KEY, [])
        if series and 0 <= now - series[-1]["t"] < INTERVAL * 0.9:
            return False
        index.set_value(SERIES_KEY, [*series, {"t": now, "c": counts}][-KEEP:])
    return True


def read_series(index: Index) -> list[dict[str, Any]]:
    series: list[dict[str, Any]] = index.get_value(SERIES_KEY, [])
    return series


@dataclass(frozen=True)
class Point:
    """What the channels served between the previous sample (`since`) and `t`."""

    since: float
    t: float
    cache: float
    upstream: float
    bytes: float
    errors: float
    stale: float


def deltas(
    series: Sequence[dict[str, Any]], channels: Collection[str], now: float, seconds: float = 3600
) -> list[Point]:
    """Per interval of the last `seconds`, the sum over `channels` of what each counter grew."""
    points = []
    for prev, cur in itertools.pairwise(series):
        if cur["t"] < now - seconds or cur["t"] <= prev["t"]:
            continue
        sums = [0.0] * len(FIELDS)
        for channel in channels:
            before = prev["c"].get(channel, [0.0] * len(FIELDS))
            after = cur["c"].get(channel)
            if after is None:
                continue
            for i, value in enumerate(after):
                old = before[i] if i < len(before) else 0.0
                sums[i] += value - old if value >= old else value
        points.append(Point(prev["t"], cur["t"], *sums))
    return points


def window_totals(points: Sequence[Point]) -> dict[str, float]:
    return {f: sum(getattr(p, f) for p in points) for f in FIELDS}


class Sampler:
    """The background loop that samples once a minute (each worker runs one; the index
    transaction keeps it to one sample per interval)."""

    def __init__(
        self, index: Index, metrics: Metrics, clock: Callable[[], float] = time.time
    ) -> None:
        self.index, self.metrics, self.clock = index, metrics, clock
        self._task: asyncio.Task[None] | None = None

    async def sample(self) -> bool:
        counts = await asyncio.to_thread(current_counts, self.metrics)
        return await asyncio.to_thread(record_sample, self.index, counts, self.clock())

    def start(self) -> None:
        """The baseline sample first, before the proxy serves: the first minute's requests
        (and an upstream failing since start) are then a difference like every other. It
        counts as this interval's sample for every worker (or is skipped when another took one
        less than an interval ago, a restart's predecessor included)."""
        try:
            record_sample(self.index, current_counts(self.metrics), self.clock())
        except Exception as exc:  # a missed sample is a gap in a chart, never a failed start
            log.warning("status sample failed", error=f"{type(exc).__name__}: {exc}")
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        # start() took the baseline; from then on, one a minute.
        while True:
            await asyncio.sleep(INTERVAL)
            try:
                await self.sample()
            except Exception as exc:  # a missed sample is a gap in a chart, nothing more
                log.warning("status sample failed", error=f"{type(exc).__name__}: {exc}")
