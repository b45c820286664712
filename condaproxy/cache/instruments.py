"""The engine's instruments: Prometheus counters, histograms and gauges, correct with several
uvicorn workers (reading them is ops/metrics.py).

With `PROMETHEUS_MULTIPROC_DIR` set (the CLI sets it, in shared memory, before any worker
starts), prometheus-client keeps every worker's values in files there and /metrics adds
them up. Labels stay bounded: channel and subdir, never package or file names.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from .metric_files import install

install()  # a full disk under the metrics files is an error, never SIGBUS (metric_files.py)

# The label values the engine uses: cache outcomes (results.py) and policy rule kinds.
OUTCOMES = ("hit", "miss", "revalidated", "stale", "coalesced")
POLICY_RULES = ("deny", "allow", "cooldown")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests(self.registry)
        self._upstream(self.registry)
        self._store(self.registry)
        self._policy(self.registry)
        self._shared(self.registry)

    def _requests(self, r: CollectorRegistry) -> None:
        """What clients asked and got."""
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

    def _upstream(self, r: CollectorRegistry) -> None:
        """What the proxy asked its upstreams, and how that went."""
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
        self.active_downloads = Gauge(
            "condaproxy_active_downloads",
            "Upstream downloads of packages and shards in flight",
            registry=r,
            multiprocess_mode="livesum",
        )

    def _store(self, r: CollectorRegistry) -> None:
        """What the cache holds and lets go."""
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
        self.store_bytes = Gauge(
            "condaproxy_store_bytes",
            "Bytes held by the cache's blob store",
            registry=r,
            multiprocess_mode="mostrecent",  # the latest reading, whichever worker took it
        )

    def _policy(self, r: CollectorRegistry) -> None:
        """The supply-chain policy (issue 13); `rule` is deny, allow or cooldown."""
        self.policy_held = Gauge(
            "condaproxy_policy_held_records",
            "Records the policy hides in the latest view of each channel, by rule kind",
            ["channel", "rule"],
            registry=r,
            multiprocess_mode="max",
        )
        self.policy_refused = Counter(
            "condaproxy_policy_refused",
            "Downloads refused by the policy, by rule kind",
            ["channel", "rule"],
            registry=r,
        )

    def _shared(self, r: CollectorRegistry) -> None:
        """The shared tier of several replicas ([storage], [cluster]): what reads of the
        bucket (or a peer) gave, what was copied to it, and whether each dependency answers."""
        self.shared_reads = Counter(
            "condaproxy_shared_reads",
            "Local cache misses asked of the shared tier, by result (hit: the bucket's copy, "
            "peer: streamed from the replica downloading it, miss, unavailable, corrupt)",
            ["result"],
            registry=r,
        )
        self.shared_writes = Counter(
            "condaproxy_shared_writes",
            "Verified blobs copied to the bucket (stored), or kept to copy later (deferred)",
            ["result"],
            registry=r,
        )
        self.shared_pending = Gauge(
            "condaproxy_shared_pending_blobs",
            "Blobs waiting to be copied to the bucket while it does not answer",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.shared_up = Gauge(
            "condaproxy_shared_up",
            "1 while a shared dependency answers, 0 while it does not (storage, coordination)",
            ["dependency"],
            registry=r,
            multiprocess_mode="livemin",
        )

    def declare_shared(self, coordination: bool) -> None:
        """The shared tier's families at 0 from the start, when [storage] is configured."""
        for result in ("hit", "peer", "miss", "unavailable", "corrupt"):
            self.shared_reads.labels(result)
        for result in ("stored", "deferred"):
            self.shared_writes.labels(result)
        self.shared_up.labels("storage").set(1)
        if coordination:
            self.shared_up.labels("coordination").set(1)

    def declare(
        self,
        channels: Iterable[str],
        upstream_channels: Iterable[str],
        policy_channels: Iterable[str],
    ) -> None:
        """Every documented family shows in /metrics from the start, at 0 for each label set
        the configuration makes possible: a family with no sample yet is not exposed at all,
        so a scrape (or an alert on `condaproxy_upstream_errors_total`, or a hit-ratio panel
        for a channel nobody used yet) would find nothing."""
        upstream = set(upstream_channels)
        for name in channels:
            for outcome in OUTCOMES:
                self.outcomes.labels(name, outcome)
            for source in ("cache", "upstream") if name in upstream else ("cache",):
                self.bytes_served.labels(name, source)
        for name in upstream:
            self.upstream_errors.labels(name)
            self.upstream_latency.labels(name)
            for result in ("304", "200"):
                self.revalidations.labels(name, result)
        for reason in ("low_disk", "disk_full", "io_error"):
            self.not_cached.labels(reason)
        for name in policy_channels:
            for kind in POLICY_RULES:
                self.policy_refused.labels(name, kind)
                self.policy_held.labels(name, kind).set(0)
