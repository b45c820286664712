"""Nothing private is visible anonymously (issue 7, section 6), a merged view that cannot be
built fails safe (section 5), and failures are events, not tracebacks (section 9)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package

pytestmark = pytest.mark.integration

ADMIN = "admin-token-123"
READER = "reader-token-456"
WRITER = "writer-token-789"
METRICS = "metrics-token-0ab"
TOKENS = {
    "ops": {"token": ADMIN, "roles": {"*": "admin"}},
    "reader": {"token": READER, "roles": {"hidden-team": "read"}},
}
WRITERS = {"ci": {"token": WRITER, "roles": {"team": "write"}}}
PKG = "/linux-64/datatool-1.0-h2.conda"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def proxy(upstream, start_proxy):
    return start_proxy(
        {
            "pub": {"upstream": upstream.url},
            "hidden-team": {"upstream": upstream.url, "private": True},
        },
        tokens=TOKENS,
        extra=f'[metrics]\ntoken = "{METRICS}"\n',
    )


def test_an_anonymous_metrics_scrape_never_names_a_private_channel(proxy):
    assert httpx.get(f"{proxy.url}/pub{PKG}", timeout=30).status_code == 200
    private = httpx.get(f"{proxy.url}/hidden-team{PKG}", headers=bearer(READER), timeout=30)
    assert private.status_code == 200
    assert httpx.get(f"{proxy.url}/hidden-team{PKG}").status_code == 401  # counted too

    for headers in ({}, bearer(READER), bearer("not-a-token-at-all")):
        text = httpx.get(f"{proxy.url}/metrics", headers=headers).text
        assert "hidden-team" not in text
        assert 'channel="private"' in text and 'channel="pub"' in text
    for token in (METRICS, ADMIN):
        text = httpx.get(f"{proxy.url}/metrics", headers=bearer(token)).text
        assert 'channel="hidden-team"' in text and 'channel="private"' not in text


def test_folded_private_counters_still_add_up(proxy):
    for _ in range(3):
        httpx.get(f"{proxy.url}/hidden-team{PKG}", headers=bearer(READER), timeout=30)

    def outcomes(text: str, channel: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("condaproxy_cache_outcomes_total{")
            and f'channel="{channel}"' in line
        )

    anonymous = httpx.get(f"{proxy.url}/metrics").text
    full = httpx.get(f"{proxy.url}/metrics", headers=bearer(METRICS)).text
    assert outcomes(anonymous, "private") == outcomes(full, "hidden-team") == 3


def test_the_unknown_channel_answer_lists_no_private_channel_to_strangers(proxy):
    anonymous = httpx.get(f"{proxy.url}/nope/noarch/repodata.json").json()
    assert anonymous["channels"] == ["pub"]
    reader = httpx.get(f"{proxy.url}/nope/noarch/repodata.json", headers=bearer(READER)).json()
    assert reader["channels"] == ["hidden-team", "pub"]


def test_a_rotten_upstream_snapshot_under_a_merged_view_is_never_the_unmerged_upstream(
    upstream, start_proxy, tmp_path
):
    """The cached upstream snapshot rots on disk (same size, other bytes). It is found at rest
    and fetched again, and the merged view is rebuilt over it; with the upstream down it
    cannot be, and the client gets a JSON 5xx. Never a bare 500, and never the upstream view
    without the uploads (that would re-open dependency confusion). (A build that fails is
    the 503 "merged view" of tests/web/test_uploads_api.py.)"""
    cache = tmp_path / "cache"
    proxy = start_proxy({"team": {"upstream": upstream.url}}, tokens=WRITERS, cache=cache)
    out = tmp_path / "out"
    first = build_package(Pkg("internal-tool", "1.0", "h0", "linux-64"), tmp_path / "w", out)
    second = build_package(Pkg("internal-tool", "1.1", "h0", "linux-64"), tmp_path / "w", out)
    third = build_package(Pkg("internal-tool", "1.2", "h0", "linux-64"), tmp_path / "w", out)

    def upload(path: Path) -> None:
        url = f"{proxy.url}/api/channels/team/upload/{path.name}"
        response = httpx.post(url, content=path.read_bytes(), headers=bearer(WRITER), timeout=30)
        assert response.status_code == 201, response.text

    def rot() -> None:
        store = cache / "meta" / hashlib.sha256(b"repodata:team/linux-64").hexdigest()[:32]
        # The upstream snapshot's JSON document (made from its .zst for the merge).
        (snapshot,) = [p for p in store.rglob("*") if p.is_file() and p.read_bytes()[:1] == b"{"]
        snapshot.write_bytes(b"\x00" * snapshot.stat().st_size)

    upload(first)
    good = httpx.get(f"{proxy.url}/team/linux-64/repodata.json", timeout=30)
    assert "internal-tool-1.0-h0.conda" in good.json()["packages.conda"]

    rot()
    upload(second)  # the uploads moved on: the merged view must be rebuilt
    rebuilt = httpx.get(f"{proxy.url}/team/linux-64/repodata.json", timeout=30)
    assert rebuilt.status_code == 200
    assert {"internal-tool-1.0-h0.conda", "internal-tool-1.1-h0.conda"} <= set(
        rebuilt.json()["packages.conda"]
    )
    assert "cached metadata damaged on disk" in proxy.log()

    rot()
    upstream.mode("down")
    upload(third)
    for name in ("repodata.json", "repodata.json.zst", "current_repodata.json"):
        response = httpx.get(f"{proxy.url}/team/linux-64/{name}", timeout=30)
        assert response.status_code in (502, 503), (name, response.status_code)
        assert response.json()["status"] == response.status_code
    assert "Traceback" not in proxy.log()


def test_an_aborted_download_is_one_warning_event_without_a_traceback(
    upstream, start_proxy, channel_dir
):
    proxy = start_proxy({"pub": {"upstream": upstream.url}})
    assert httpx.get(f"{proxy.url}/pub/linux-64/repodata.json").status_code == 200
    upstream.mode("corrupt")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{proxy.url}/pub{PKG}", timeout=30)
    events = proxy.events_where(lambda e: e.get("path") == f"/pub{PKG}")
    assert [e["event"] for e in events] == ["response aborted"]
    assert events[0]["level"] == "warning" and "sha256" in events[0]["error"]
    log = proxy.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log


def test_refused_requests_are_warnings_with_their_cause(proxy):
    assert httpx.get(f"{proxy.url}/pub/%252e%252e/x/linux-64/a-1-0.conda").status_code == 400
    assert httpx.post(f"{proxy.url}/pub/noarch/repodata.json").status_code == 405
    refused = proxy.events_where(lambda e: e.get("status") in (400, 405), count=2)
    assert len(refused) == 2
    assert all(e["level"] == "warning" and e["error"] for e in refused)
    # Everyday answers stay quiet: a shard probe's 404 is not a warning.
    assert httpx.get(f"{proxy.url}/nope/noarch/repodata.json").status_code == 404
    quiet = proxy.events_where(lambda e: e.get("status") == 404)
    assert quiet and all(e["level"] == "info" for e in quiet)
