"""Numbers and dates in headers the proxy reads from a peer: an upstream's `Retry-After` on a
429/503, a client's `If-Modified-Since` and `If-Range`. Whatever text arrives there, the
answer is the one the README promises (a 502 naming the upstream, with a sane Retry-After or
none; the stale copy; a 200, 206 or 304), never a 500: `str.isdigit` takes `²` (which int()
refuses), int() raises past 4300 digits, and a date whose zone is `+99999999999999999999`
makes the standard library raise OverflowError.

Real processes: the test upstream and `condaproxy serve`."""

from __future__ import annotations

import os

import pytest

from tests.support.hostile import HostileSetup as Setup

pytestmark = pytest.mark.integration

PKG = "linux-64/small-1.0-0.conda"
REPODATA = "/linux-64/repodata.json"

# What an upstream may put in Retry-After, and the Retry-After the client must get (None: none).
RETRY_AFTER = {
    "5000 digits": ("9" * 5000, "3600"),
    "40 digits": ("9" * 40, "3600"),
    "superscript two (UTF-8)": ("\u00b2", None),
    "Arabic-Indic three": ("\u0663", None),
    "date with a huge zone": ("Tue, 01 Dec 2026 11:00:00 +99999999999999999999", None),
    "negative": ("-5", None),
    "plain": ("120", "120"),
}

# What a client may put in a date header of a request for cached repodata.
CLIENT_DATES = {
    "huge positive zone": "Tue, 01 Dec 2026 11:00:00 +99999999999999999999",
    "huge negative zone": "Jan 01 -99999999999999999 1:2 01 -0000",
    "year 99999": "Tue, 01 Dec 99999 11:00:00 GMT",
    "superscript": "\u00b2",
}


# ttl 0: every request revalidates, so a cached copy meets the hostile answer too.
setup = Setup.fixture("numbers", {PKG: os.urandom(4096)}, ttl=0)


def busy(setup: Setup, path: str, status: int, value: str) -> None:
    for variant in (path, path + ".zst"):
        setup.upstream.override(variant, b"not now", status, headers={"retry-after": value})


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("case", list(RETRY_AFTER))
def test_a_hostile_retry_after_is_a_502_naming_the_upstream(
    setup: Setup, case: str, status: int
) -> None:
    value, passed_on = RETRY_AFTER[case]
    setup.fresh()
    busy(setup, REPODATA, status, value)
    r = setup.client.get(f"{setup.proxy.url}/ch{REPODATA}")
    assert r.status_code == 502, r.text
    assert setup.upstream.url in r.json()["upstream"]
    assert r.headers.get("retry-after") == passed_on


@pytest.mark.parametrize("case", list(RETRY_AFTER))
def test_a_hostile_retry_after_on_revalidation_serves_the_stale_copy(
    setup: Setup, case: str
) -> None:
    setup.fresh()
    good = setup.client.get(f"{setup.proxy.url}/ch{REPODATA}")
    assert good.status_code == 200
    busy(setup, REPODATA, 503, RETRY_AFTER[case][0])
    r = setup.client.get(f"{setup.proxy.url}/ch{REPODATA}")
    assert r.status_code == 200, r.text
    assert r.headers["x-cache"] == "STALE"
    assert r.content == good.content


@pytest.mark.parametrize("case", list(RETRY_AFTER))
def test_a_hostile_retry_after_for_a_package_is_a_502(setup: Setup, case: str) -> None:
    setup.fresh()
    assert setup.client.get(f"{setup.proxy.url}/ch{REPODATA}").status_code == 200
    setup.upstream.override(f"/{PKG}", b"", 503, headers={"retry-after": RETRY_AFTER[case][0]})
    r = setup.client.get(f"{setup.proxy.url}/ch/{PKG}")
    assert r.status_code == 502, r.text
    assert r.headers.get("retry-after") == RETRY_AFTER[case][1]


@pytest.mark.parametrize("header", ["if-modified-since", "if-range"])
@pytest.mark.parametrize("case", list(CLIENT_DATES))
def test_a_hostile_client_date_is_read_as_no_date(setup: Setup, case: str, header: str) -> None:
    setup.fresh()
    url = f"{setup.proxy.url}/ch{REPODATA}"
    whole = setup.client.get(url, headers={"accept-encoding": "identity"})
    assert whole.status_code == 200
    asked = {"accept-encoding": b"identity", header: CLIENT_DATES[case].encode()}
    if header == "if-range":
        asked["range"] = b"bytes=0-9"
    r = setup.client.get(url, headers=asked)
    # No date to compare: If-Modified-Since does not apply, and an If-Range that does not
    # match means the whole representation (RFC 9110 §13.1.5).
    assert r.status_code == 200, r.text
    assert r.content == whole.content
