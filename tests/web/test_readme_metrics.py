"""README "Metrics": every family it names is in /metrics from the first scrape, at 0 for the
label sets the configuration allows, not only after its first event (a family with no sample
is not exposed at all, so an alert or dashboard query on it would see no series)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import respx
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from condaproxy.settings import ChannelSettings, PolicySettings
from condaproxy.web.app import create_app
from tests.support.inproc import Clock, make_settings

UP = "https://up.example/"
DOCUMENTED = (
    "condaproxy_requests",
    "condaproxy_cache_outcomes",
    "condaproxy_bytes_served",
    "condaproxy_upstream_request_seconds",
    "condaproxy_upstream_errors",
    "condaproxy_revalidations",
    "condaproxy_evictions",
    "condaproxy_evicted_bytes",
    "condaproxy_store_bytes",
    "condaproxy_not_cached",
    "condaproxy_policy_refused",
)


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {
        f.name: [(s.labels, s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


def test_documented_families_are_exposed_before_any_event(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "cache",
        [ChannelSettings("cf", UP + "cf", cooldown="3d"), ChannelSettings("local")],
    )
    settings = msgspec.structs.replace(settings, policy=PolicySettings(deny=("evil-pkg",)))
    with respx.mock(assert_all_called=False), TestClient(create_app(settings, clock=Clock())) as c:
        # One request, so that the request families have a sample too.
        assert c.get("/healthz").status_code == 200
        text = c.get("/metrics").text
    found = families(text)
    missing = [name for name in DOCUMENTED if name not in found]
    assert not missing, f"not in /metrics at start: {missing}"
    assert ({"channel": "cf"}, 0.0) in found["condaproxy_upstream_errors"]
    # A local-only channel has no upstream to fail or revalidate against.
    assert all(labels["channel"] != "local" for labels, _ in found["condaproxy_upstream_errors"])
    revalidations = {labels["result"] for labels, _ in found["condaproxy_revalidations"]}
    assert revalidations == {"304", "200"}
    reasons = {labels["reason"] for labels, _ in found["condaproxy_not_cached"]}
    assert reasons == {"low_disk", "disk_full", "io_error"}
    refused = {(lb["channel"], lb["rule"]) for lb, _ in found["condaproxy_policy_refused"]}
    assert ("cf", "deny") in refused and ("cf", "cooldown") in refused
    assert all(v == 0.0 for _, v in found["condaproxy_policy_refused"])
