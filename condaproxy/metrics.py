"""Prometheus metrics, correct with several uvicorn workers.

With `PROMETHEUS_MULTIPROC_DIR` set (the CLI sets it, inside the cache directory, before any
worker starts), prometheus-client keeps every worker's values in files there and /metrics adds
them up. Labels stay bounded: channel and subdir, never package or file names.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client import values as prom_values
from prometheus_client.metrics_core import Metric


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


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "condaproxy_requests",
            "Requests by route kind and status",
            ["kind", "status"],
            registry=r,
        )
        self.outcomes = Counter(
            "condaproxy_cache_outcomes",
            "Cache outcomes (hit, miss, revalidated, stale, coalesced)",
            ["channel", "outcome"],
            registry=r,
        )
        self.bytes_served = Counter(
            "condaproxy_bytes_served",
            "Body bytes sent to clients, by where they came from (cache or upstream)",
            ["channel", "source"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            "condaproxy_upstream_request_seconds",
            "Time to the upstream's response headers",
            ["channel"],
            registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.upstream_errors = Counter(
            "condaproxy_upstream_errors",
            "Upstream failures (5xx, timeouts, broken bodies)",
            ["channel"],
            registry=r,
        )
        self.revalidations = Counter(
            "condaproxy_revalidations",
            "Conditional upstream requests for metadata, by result (304 or 200)",
            ["channel", "result"],
            registry=r,
        )
        self.not_cached = Counter(
            "condaproxy_not_cached",
            "Verified downloads served but not kept, by reason (low_disk, disk_full, io_error)",
            ["reason"],
            registry=r,
        )
        self.evictions = Counter(
            "condaproxy_evictions", "Cached blobs evicted to stay under max_size", registry=r
        )
        self.evicted_bytes = Counter(
            "condaproxy_evicted_bytes", "Bytes evicted to stay under max_size", registry=r
        )
        self.store_max_bytes = Gauge(
            "condaproxy_store_max_bytes",
            "The cache's max_size in bytes (0: unbounded)",
            registry=r,
            multiprocess_mode="max",
        )
        self.active_downloads = Gauge(
            "condaproxy_active_downloads",
            "Upstream downloads of packages and shards in flight",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.store_bytes = Gauge(
            "condaproxy_store_bytes",
            "Bytes held by the cache's blob store",
            registry=r,
            multiprocess_mode="max",
        )

    def _reading(self) -> CollectorRegistry:
        """What to read: every worker's values when running multiprocess, else our own."""
        if not multiprocess():
            return self.registry
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)
        return registry

    def exposition(self, hidden: Collection[str] = ()) -> tuple[bytes, str]:
        """The text format; channels in `hidden` are folded into one `channel="private"`."""
        reading: Any = self._reading()
        if hidden:
            reading = _Folded(reading, frozenset(hidden))
        return generate_latest(reading), CONTENT_TYPE_LATEST

    def channel_counts(self) -> dict[str, dict[str, float]]:
        """Per channel: each cache outcome by name, and the other channel counters by metric
        name (e.g. `upstream_errors`), summed over workers."""
        totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for family in self._reading().collect():
            for sample in family.samples:
                channel = sample.labels.get("channel")
                if not channel or not sample.name.endswith("_total"):
                    continue
                name = sample.name.removeprefix("condaproxy_").removesuffix("_total")
                totals[channel][sample.labels.get("outcome", name)] += sample.value
        return {channel: dict(counts) for channel, counts in totals.items()}
