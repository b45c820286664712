"""README "Status page": it shows, per channel, "whether it is failing (upstream errors or stale
copies served since)" and "a chart of requests and bytes per minute over the last hour".

Both are read as the difference between the minute samples of the counters, and the first
sample was taken a minute after start with nothing before it: on a fresh cache, whatever
happened in the proxy's first minute was in no interval. A channel whose upstream failed every
request since start showed "not contacted yet", never "failing", and the first minute's
requests never reached the chart. The sampler now takes its baseline when the proxy starts.
Checked against `condaproxy serve`, with one worker and with two."""

from __future__ import annotations

import httpx
import pytest

from tests.support.processes import free_port

pytestmark = pytest.mark.integration

JSON = {"accept": "application/json"}


def channel_row(proxy_url: str, name: str) -> dict:
    doc = httpx.get(proxy_url + "/", headers=JSON, timeout=10).json()
    (row,) = [c for c in doc["channels"] if c["name"] == name]
    return dict(row)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    "path", ["linux-64/repodata.json", "noarch/repodata.json.zst", "linux-64/tool-1.0-0.conda"]
)
def test_an_upstream_failing_since_start_is_shown_failing(
    start_proxy, upstream, workers: int, path: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proxy = start_proxy(
        {"gone": {"upstream": dead}, "cf": {"upstream": upstream.url}}, workers=workers
    )
    for _ in range(3):
        answer = httpx.get(f"{proxy.url}/gone/{path}", timeout=30)
        assert answer.status_code == 502, answer.text
    assert httpx.get(f"{proxy.url}/cf/linux-64/repodata.json", timeout=30).status_code == 200
    for _ in range(4):  # whichever worker answers
        gone = channel_row(proxy.url, "gone")
        assert gone["upstream_errors"] >= 3, gone
        assert gone["upstream_state"] == "failing", gone
        assert gone["upstream_errors_last_hour"] == gone["upstream_errors"], gone
        assert channel_row(proxy.url, "cf")["upstream_state"] == "ok"
    html = httpx.get(proxy.url + "/", timeout=10).text
    assert 'class="bad">failing<' in html
