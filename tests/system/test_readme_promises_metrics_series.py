"""README "Metrics": "Every family is exposed from the first scrape, at 0 for each configured
channel, so a query or alert on it finds its series before the first event."

The per-channel families a dashboard reads first (`condaproxy_cache_outcomes_total`,
`condaproxy_bytes_served_total`, `condaproxy_upstream_request_seconds`,
`condaproxy_policy_held_records`) only had a series once a channel saw traffic: a hit-ratio panel
or `rate(condaproxy_cache_outcomes_total{channel="bioconda"}[5m])` found nothing for a channel
not used yet. Checked against `condaproxy serve` with one and two workers (prometheus-client's
multiprocess files), anonymously (private channels folded into `channel="private"`) and with the
metrics token (every channel by name)."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

METRICS_TOKEN = "metrics-token-0123456789"
OUTCOMES = {"hit", "miss", "revalidated", "stale", "coalesced"}
POLICY_RULES = {"deny", "allow", "cooldown"}
# A public mirror, a private mirror, a local-only channel and a channel under a cooldown.
CHANNELS = {
    "cf": {"upstream": "http://127.0.0.1:9/cf"},
    "hidden": {"upstream": "http://127.0.0.1:9/hidden", "private": True},
    "local": {},
    "young": {"upstream": "http://127.0.0.1:9/young", "cooldown": "3d"},
}


def series(text: str) -> dict[str, set[frozenset[tuple[str, str]]]]:
    """Sample name -> the label sets it has a sample for."""
    found: dict[str, set[frozenset[tuple[str, str]]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).add(frozenset(sample.labels.items()))
    return found


def channels_of(found: dict[str, set[frozenset[tuple[str, str]]]], name: str) -> set[str]:
    return {dict(labels).get("channel", "") for labels in found.get(name, set())}


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("scraper", ["anonymous", "metrics-token"])
def test_per_channel_families_have_a_series_per_channel_from_the_first_scrape(
    start_proxy, workers: int, scraper: str
) -> None:
    proxy = start_proxy(CHANNELS, workers=workers, extra=f'[metrics]\ntoken = "{METRICS_TOKEN}"\n')
    headers = {"authorization": f"Bearer {METRICS_TOKEN}"} if scraper == "metrics-token" else {}
    text = httpx.get(proxy.url + "/metrics", headers=headers, timeout=10).text
    found = series(text)
    shown = {name: name for name in CHANNELS}
    if scraper == "anonymous":
        shown["hidden"] = "private"
    upstream = {shown[n] for n, c in CHANNELS.items() if c.get("upstream")}
    every = set(shown.values())

    outcomes = found.get("condaproxy_cache_outcomes_total", set())
    for channel in every:
        got = {dict(labels)["outcome"] for labels in outcomes if dict(labels)["channel"] == channel}
        assert got == OUTCOMES, f"cache outcomes of {channel!r}: {sorted(got)}"
    served = found.get("condaproxy_bytes_served_total", set())
    for channel in every:
        got = {dict(labels)["source"] for labels in served if dict(labels)["channel"] == channel}
        assert "cache" in got, f"bytes served of {channel!r}: {sorted(got)}"
        if channel in upstream:
            assert got == {"cache", "upstream"}, f"bytes served of {channel!r}: {sorted(got)}"
    assert channels_of(found, "condaproxy_upstream_request_seconds_count") == upstream
    assert channels_of(found, "condaproxy_upstream_errors_total") == upstream
    held = found.get("condaproxy_policy_held_records", set())
    assert {(dict(lb)["channel"], dict(lb)["rule"]) for lb in held} == {
        ("young", rule) for rule in POLICY_RULES
    }
    # Nothing happened yet: every one of these series is at 0.
    for family in text_string_to_metric_families(text):
        if family.name in {"condaproxy_cache_outcomes", "condaproxy_bytes_served"}:
            assert all(s.value == 0 for s in family.samples), family.samples
    if scraper == "anonymous":
        assert "hidden" not in text
