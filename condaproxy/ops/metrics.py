"""Reading the metrics: the /metrics exposition (private channels folded for anonymous
scrapers) and per-channel counters for the stats API, summed over every worker.

With `PROMETHEUS_MULTIPROC_DIR` set (the CLI sets it before any worker starts),
prometheus-client keeps every worker's values in files and reading adds them up.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client import values as prom_values
from prometheus_client.metrics_core import Metric

from ..cache.instruments import Metrics

log = structlog.get_logger("condaproxy.ops.metrics")


def multiprocess() -> bool:
    """Whether prometheus-client keeps values in files (it decides once, at import)."""
    return prom_values.ValueClass is not prom_values.MutexValue


PRIVATE = "private"


class _Folded:
    """A registry view whose `channel` labels in `hidden` read as one value, summed."""

    def __init__(self, registry: CollectorRegistry, hidden: frozenset[str]) -> None:
        self.registry, self.hidden = registry, hidden

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            folded: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
            for sample in family.samples:
                labels = dict(sample.labels)
                if labels.get("channel") in self.hidden:
                    labels["channel"] = PRIVATE
                key = (sample.name, tuple(sorted(labels.items())))
                folded[key] = folded.get(key, 0.0) + sample.value
            out = Metric(family.name, family.documentation, family.type, family.unit)
            for (name, pairs), value in folded.items():
                out.add_sample(name, dict(pairs), value)
            yield out


def _reading(metrics: Metrics) -> CollectorRegistry:
    """What to read: every worker's values when running multiprocess, else our own."""
    if not multiprocess():
        return metrics.registry
    registry = CollectorRegistry()
    prom_multiprocess.MultiProcessCollector(registry)
    return registry


def exposition(metrics: Metrics, hidden: Collection[str] = ()) -> tuple[bytes, str]:
    """The text format; channels in `hidden` are folded into one `channel="private"`."""
    reading: Any = _reading(metrics)
    if hidden:
        reading = _Folded(reading, frozenset(hidden))
    return generate_latest(reading), CONTENT_TYPE_LATEST


def channel_counts(metrics: Metrics) -> dict[str, dict[str, float]]:
    """Per channel: each cache outcome by name, and the other channel counters by metric name
    (e.g. `upstream_errors`), summed over workers."""
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for family in _reading(metrics).collect():
        for sample in family.samples:
            channel = sample.labels.get("channel")
            if not channel or not sample.name.endswith("_total"):
                continue
            name = sample.name.removeprefix("condaproxy_").removesuffix("_total")
            totals[channel][sample.labels.get("outcome", name)] += sample.value
    return {channel: dict(counts) for channel, counts in totals.items()}


def policy_held(metrics: Metrics) -> dict[str, dict[str, int]]:
    """Per channel, the records its latest policy views hold back, by rule kind."""
    held: dict[str, dict[str, int]] = defaultdict(dict)
    for family in _reading(metrics).collect():
        for sample in family.samples:
            if sample.name == "condaproxy_policy_held_records" and sample.labels.get("channel"):
                rule = sample.labels.get("rule", "?")
                channel = held[sample.labels["channel"]]
                channel[rule] = channel.get(rule, 0) + int(sample.value)
    return dict(held)


class StoreSize:
    """`condaproxy_store_bytes` as a scrape reads it: the cached files' bytes from the index
    (what `/api/cache/stats` says), read again when this worker committed a file since the
    last reading (at most once a second however many scrape), or when that is older than
    `max_age` (another worker's files). A purge sets it as it ends (cache_api.py). It was
    set only by eviction (with `max_size`) and by the stats call, so a scrape said 0 with
    files cached, or the old size after a purge."""

    def __init__(
        self,
        metrics: Metrics,
        usage: Callable[[], dict[str, dict[str, int]]],
        changes: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
        max_age: float = 10.0,
    ) -> None:
        self.metrics, self.usage, self.changes, self.clock = metrics, usage, changes, clock
        self.max_age = max_age
        self._read: tuple[float, int] | None = None  # when, and `changes` then
        self._cost = 0.0  # how long the last reading took
        self._lock = asyncio.Lock()

    def _due(self) -> bool:
        """A reading walks every entry of the index (seconds with 200,000 cached files, in a
        thread that takes the GIL from the requests): readings are spaced so that they take
        at most a tenth of the worker's time, however often the scrapes come."""
        if self._read is None:
            return True
        age = self.clock() - self._read[0]
        spacing = 10 * self._cost
        if age >= max(self.max_age, spacing):
            return True
        return age >= max(1.0, spacing) and self.changes() != self._read[1]

    async def refresh(self) -> None:
        async with self._lock:
            if not self._due():
                return
            changes, started = self.changes(), self.clock()
            try:
                usage = await asyncio.to_thread(self.usage)
            except Exception as exc:  # an index in trouble: the scrape keeps the last reading
                log.warning("store size unread", error=f"{type(exc).__name__}: {exc}")
                self._read = (self.clock(), changes)
                return
            self.metrics.store_bytes.set(sum(u["bytes"] for u in usage.values()))
            self._read = (self.clock(), changes)
            self._cost = self._read[0] - started
