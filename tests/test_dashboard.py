"""The Grafana dashboard shipped in the chart: it parses, every PromQL expression selects only
series the proxy exports (or the two gauges it proposes), and the chart renders it as a
ConfigMap for Grafana's sidecar when asked."""

from __future__ import annotations

import json

import pytest

from tests.support.promql import metric_names
from tests.test_helm import CHART, named, render, validate

DASHBOARD = CHART / "dashboards" / "condaproxy.json"

PROPOSED_METRICS = {"condaproxy_store_max_bytes", "condaproxy_active_downloads"}


def exported_series() -> set[str]:
    """Every series name the proxy's registry exposes, plus the two gauges the dashboard
    proposes."""
    from condaproxy.metrics import Metrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names = set(PROPOSED_METRICS)
    for family in Metrics().registry.collect():
        names.update(family.name + s for s in suffixes[family.type])
    return names


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    variables = board["templating"]["list"]
    queries += [v["definition"] for v in variables if v["type"] == "query"]
    return queries


def test_dashboard_queries_only_metrics_the_proxy_exports():
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "condaproxy" and board["panels"]
    queries = dashboard_queries()
    exported = exported_series()
    used = set()
    for query in queries:
        names = metric_names(query)
        assert names, f"no metric in {query!r}"
        assert names <= exported, f"{query!r} uses {sorted(names - exported)}"
        used |= names
    # Every panel topic the dashboard promises is there.
    for needed in [
        "condaproxy_cache_outcomes_total",
        "condaproxy_bytes_served_total",
        "condaproxy_upstream_request_seconds_bucket",
        "condaproxy_upstream_errors_total",
        "condaproxy_store_bytes",
        "condaproxy_evictions_total",
        *PROPOSED_METRICS,
    ]:
        assert needed in used, needed


@pytest.mark.parametrize(
    "query, names",
    [
        ('sum by (le) (rate(a_bucket{job=~"$job", x="y"}[$__rate_interval]))', {"a_bucket"}),
        ("histogram_quantile(0.9, sum without (pod) (rate(b_count[5m]))) / c", {"b_count", "c"}),
        ('label_values(d_total{job=~"$job"}, channel)', {"d_total"}),
        ("e > 0 and on (instance) f offset 5m", {"e", "f"}),
        ('up{job="sum(rate(x[1m]))"}', {"up"}),
    ],
)
def test_promql_metric_names_are_found(query: str, names: set[str]):
    assert metric_names(query) == names


def test_chart_ships_the_dashboard_for_grafanas_sidecar():
    assert not [d for d in render() if d["metadata"]["name"].endswith("-dashboard")]
    docs = render({"grafanaDashboard": {"enabled": True, "namespace": "monitoring"}})
    validate(docs)
    config = named(docs, "ConfigMap", "cache-condaproxy-dashboard")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config["metadata"]["namespace"] == "monitoring"
    assert json.loads(config["data"]["condaproxy.json"]) == json.loads(DASHBOARD.read_text())
