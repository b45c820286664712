"""Operators' surface against a real proxy process with two workers: purge, stats, metrics,
health and readiness."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgpack
import pytest

from condaproxy.rules.codecs import zstd_decompress
from tests.support.clients import rattler_install

pytestmark = pytest.mark.integration

ADMIN = "admin-token-123"
WRITER = "writer-token-45"
TOKENS = {
    "ops": {"token": ADMIN, "roles": {"*": "admin"}},
    "ci": {"token": WRITER, "roles": {"*": "write"}},
}
PKG = "/linux-64/datatool-1.0-h2.conda"
NOARCH = "/noarch/pyutil-0.4-pyh0.conda"


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def proxy(upstream, start_proxy):
    return start_proxy({"local": {"upstream": upstream.url}}, tokens=TOKENS, workers=2)


def admin(method: str, url: str, token: str | None = ADMIN) -> httpx.Response:
    headers = {"x-api-key": token} if token else {}
    return httpx.request(method, url, headers=headers, timeout=30)


def test_health_and_readiness(proxy):
    assert httpx.get(proxy.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(proxy.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["caching"] is True


def test_metrics_after_a_known_sequence_add_up_across_workers(proxy, upstream):
    base = f"{proxy.url}/local"
    for _ in range(2):
        httpx.get(base + "/noarch/repodata.json")
    httpx.get(base + PKG)  # miss
    for _ in range(5):
        assert httpx.get(base + PKG).headers["x-cache"] == "HIT"
    assert httpx.get(base + "/linux-64/missing-1.0-0.conda").status_code == 404
    size = len(httpx.get(base + PKG).content)  # one more hit
    text = httpx.get(proxy.url + "/metrics").text
    assert metric(text, "condaproxy_cache_outcomes_total", channel="local", outcome="hit") == 7
    assert metric(text, "condaproxy_cache_outcomes_total", channel="local", outcome="miss") == 2
    assert metric(text, "condaproxy_requests_total", kind="package", status="200") == 7
    assert metric(text, "condaproxy_requests_total", kind="package", status="404") == 1
    assert metric(text, "condaproxy_requests_total", kind="repodata", status="200") == 2
    assert (
        metric(text, "condaproxy_bytes_served_total", channel="local", source="cache") >= 6 * size
    )
    # Upstream: the noarch repodata.json.zst; linux-64's shard index and the package's shard
    # (its record, needed before a byte is streamed); the package; the missing package.
    assert metric(text, "condaproxy_upstream_request_seconds_count", channel="local") == 5
    # Labels stay bounded: no file or package names.
    assert "datatool" not in text


def test_admin_calls_need_an_admin_token(proxy):
    assert httpx.get(f"{proxy.url}/local{PKG}", timeout=30).status_code == 200
    before = admin("GET", f"{proxy.url}/api/cache/stats").json()["channels"]["local"]["files"]
    assert before >= 1
    for token, status in ((None, 401), ("wrong-token-999", 401), (WRITER, 403)):
        assert admin("DELETE", f"{proxy.url}/api/cache", token).status_code == status
        assert admin("GET", f"{proxy.url}/api/cache/stats", token).status_code == status
    stats = admin("GET", f"{proxy.url}/api/cache/stats").json()
    assert stats["channels"]["local"]["files"] == before, "nothing was purged"


def test_purge_scopes_and_stats(proxy, upstream, tmp_path: Path):
    base = f"{proxy.url}/local"
    httpx.get(base + "/noarch/repodata.json")
    for path in (PKG, NOARCH):
        assert httpx.get(base + path).status_code == 200
    stats = admin("GET", f"{proxy.url}/api/cache/stats").json()
    # The two packages, and the shard that held the linux-64 package's record (noarch's came
    # from the repodata already cached).
    assert stats["channels"]["local"]["files"] == 3
    assert stats["channels"]["local"]["misses"] == 3
    assert stats["store"]["bytes"] > 0

    one = admin("DELETE", f"{proxy.url}/api/cache/local/linux-64/datatool-1.0-h2.conda").json()
    assert one["removed"]["files"] == 1 and one["removed"]["bytes"] > 0
    assert httpx.get(base + PKG).headers["x-cache"] == "MISS"
    assert upstream.count("GET", PKG) == 2
    assert httpx.get(base + NOARCH).headers["x-cache"] == "HIT", "other files stay"

    by_name = admin("DELETE", f"{proxy.url}/api/cache?package=pyutil").json()
    assert by_name["removed"]["files"] == 1
    assert httpx.get(base + NOARCH).headers["x-cache"] == "MISS"

    meta = admin("DELETE", f"{proxy.url}/api/cache/local?metadata_only=true").json()
    assert meta["removed"]["files"] == 0 and meta["removed"]["metadata"] >= 1
    assert httpx.get(base + "/noarch/repodata.json").headers["x-cache"] == "MISS"
    assert httpx.get(base + PKG).headers["x-cache"] == "HIT"

    subdir = admin("DELETE", f"{proxy.url}/api/cache/local/linux-64").json()
    assert subdir["removed"]["files"] == 2  # the package and its shard
    everything = admin("DELETE", f"{proxy.url}/api/cache").json()
    assert everything["removed"]["files"] == 1 and everything["removed"]["metadata"] >= 1
    assert admin("GET", f"{proxy.url}/api/cache/stats").json()["channels"]["local"]["files"] == 0

    # A real client installs again: everything comes back from upstream.
    result = rattler_install(base, tmp_path / "again", True, "datatool")
    assert result["ok"], result.get("trace")
    assert upstream.count("GET", PKG) == 3  # first fetch, after the file purge, reinstall
    assert admin("DELETE", f"{proxy.url}/api/cache/nope").status_code == 404


def test_purge_never_touches_uploads(upstream, start_proxy, tmp_path: Path):
    from tests.support.channel import Pkg, build_package

    proxy = start_proxy({"local": {"upstream": upstream.url}}, tokens=TOKENS)
    path = build_package(Pkg("mine", "1.0", "h0", "noarch"), tmp_path / "w", tmp_path / "o")
    r = httpx.post(
        f"{proxy.url}/api/channels/local/upload/{path.name}",
        content=path.read_bytes(),
        headers={"x-api-key": WRITER},
    )
    assert r.status_code == 201
    index = httpx.get(f"{proxy.url}/local/noarch/repodata_shards.msgpack.zst")
    assert index.status_code == 200
    digest = msgpack.unpackb(zstd_decompress(index.content))["shards"]["mine"].hex()
    assert admin("DELETE", f"{proxy.url}/api/cache").status_code == 200
    assert httpx.get(f"{proxy.url}/local/noarch/{path.name}").content == path.read_bytes()
    repodata = httpx.get(f"{proxy.url}/local/noarch/repodata.json").json()
    assert path.name in repodata["packages.conda"]
    # A client holding the old index can still fetch the shard derived from the upload.
    shard = httpx.get(f"{proxy.url}/local/noarch/shards/{digest}.msgpack.zst")
    assert shard.status_code == 200


def wait_for_job(proxy, job_id: str, seconds: float = 60) -> dict:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        jobs = admin("GET", f"{proxy.url}/api/cache/stats").json()["prefetch"]
        job = next(j for j in jobs if j["id"] == job_id)
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"prefetch {job_id} did not finish")


def test_prefetch_warms_the_cache_with_dependencies(proxy, upstream, tmp_path: Path):
    url = f"{proxy.url}/api/cache/local/linux-64/prefetch"
    body = {"packages": ["datatool >=1"], "with_dependencies": True}
    for token, status in ((None, 401), (WRITER, 403)):
        headers = {"x-api-key": token} if token else {}
        assert httpx.post(url, json=body, headers=headers).status_code == status
    accepted = httpx.post(url, json=body, headers={"x-api-key": ADMIN})
    assert accepted.status_code == 202
    job = wait_for_job(proxy, accepted.json()["id"])
    assert job["state"] == "done", job
    assert job["total"] == 4 and job["fetched"] == 4 and job["failures"] == []
    for path in (
        "/linux-64/datatool-1.0-h2.conda",
        "/linux-64/libcore-2.1-h1.tar.bz2",
        "/linux-64/libzlib-1.3-h0.conda",
        "/noarch/pyutil-0.4-pyh0.conda",
    ):
        assert upstream.count("GET", path) == 1
        assert httpx.head(f"{proxy.url}/local{path}").headers["x-cache"] == "HIT"
    # A client installs the same environment without another upstream package request.
    result = rattler_install(f"{proxy.url}/local", tmp_path / "env", True, "datatool")
    assert result["ok"], result.get("trace")
    assert upstream.count("GET", "/linux-64/datatool-1.0-h2.conda") == 1

    # Plain file names, no dependencies.
    plain = httpx.post(
        f"{proxy.url}/api/cache/local/linux-64/prefetch",
        json=["datatool-0.9-h0.conda"],
        headers={"x-api-key": ADMIN},
    )
    job = wait_for_job(proxy, plain.json()["id"])
    assert (job["state"], job["total"], job["fetched"]) == ("done", 1, 1)
    assert upstream.count("GET", "/linux-64/datatool-0.9-h0.conda") == 1

    # What cannot be resolved fails the job, visibly.
    missing = httpx.post(url, json=["nosuchpackage >=1"], headers={"x-api-key": ADMIN})
    job = wait_for_job(proxy, missing.json()["id"])
    assert job["state"] == "failed" and "nosuchpackage" in job["error"]
    bad = httpx.post(url, json={"packages": []}, headers={"x-api-key": ADMIN})
    assert bad.status_code == 400 and "non-empty list" in bad.json()["error"]
