"""`condaproxy_store_bytes` (README, Metrics) as a scraper reads it from a real proxy. It was
set only by eviction (with `max_size`) and by `GET /api/cache/stats`: without `max_size` a
scrape said 0 with files cached, and after a purge it kept the old size until someone asked
for the stats. A scrape now says what the cache holds (what the stats say), after a
download, a purge, with one worker or several."""

from __future__ import annotations

import re
import time

import httpx
import pytest

pytestmark = pytest.mark.integration

ADMIN = "admin-token-55081"
FILES = {"linux-64/libzlib-1.3-h0.conda": 985, "noarch/pyutil-0.4-pyh0.conda": 990}


def store_bytes(proxy) -> float:
    text = httpx.get(f"{proxy.url}/metrics").text
    found = re.search(r"^condaproxy_store_bytes (\S+)$", text, re.M)
    assert found, text
    return float(found.group(1))


def stats_bytes(proxy) -> int:
    got = httpx.get(f"{proxy.url}/api/cache/stats", headers={"x-api-key": ADMIN})
    return int(got.json()["store"]["bytes"])


def eventually(read, good, seconds: float = 15.0) -> float:
    """A reading taken by another worker is at most `max_age` (10 s) old."""
    deadline = time.monotonic() + seconds
    while not good(got := read()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("max_size", [None, "1GiB"])
def test_a_scrape_says_what_the_cache_holds(upstream, start_proxy, workers, max_size):
    proxy = start_proxy(
        {"pub": {"upstream": upstream.url}},
        workers=workers,
        tokens={"ops": {"token": ADMIN, "roles": {"*": "admin"}}},
        env={"CONDAPROXY_CACHE_MAX_SIZE": max_size} if max_size else None,
    )
    assert store_bytes(proxy) == 0
    for path in FILES:
        assert httpx.get(f"{proxy.url}/pub/{path}").status_code == 200
    # the packages, and the shards that gave their checksums (a stats call sets the gauge
    # too: the scrapes come first)
    scraped = eventually(lambda: store_bytes(proxy), lambda got: got >= sum(FILES.values()))
    assert scraped == stats_bytes(proxy)

    purged = httpx.delete(f"{proxy.url}/api/cache/pub/linux-64", headers={"x-api-key": ADMIN})
    assert purged.json()["removed"]["files"] >= 1
    left = store_bytes(proxy)  # at once, whichever worker purged
    assert 0 < left < scraped
    assert left == stats_bytes(proxy)

    httpx.delete(f"{proxy.url}/api/cache", headers={"x-api-key": ADMIN}).raise_for_status()
    assert store_bytes(proxy) == 0
    assert stats_bytes(proxy) == 0


def test_one_worker_says_it_at_once(upstream, start_proxy):
    proxy = start_proxy(
        {"pub": {"upstream": upstream.url}},
        tokens={"ops": {"token": ADMIN, "roles": {"*": "admin"}}},
    )
    assert store_bytes(proxy) == 0
    assert httpx.get(f"{proxy.url}/pub/linux-64/libzlib-1.3-h0.conda").status_code == 200
    time.sleep(1.0)  # a worker reads the index again at most once a second
    assert store_bytes(proxy) == stats_bytes(proxy) > 0
