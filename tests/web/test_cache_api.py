"""The cache API in-process: stats, purge by every scope, who may call it, the audit trail, and
prefetch jobs from submission to their last file. The upstream is respx; the clock is the
test's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from condaproxy.settings import ChannelSettings
from condaproxy.web.app import create_app
from tests.support.channel import Pkg
from tests.support.inproc import (
    Clock,
    built,
    decode_index,
    make_settings,
    record,
    services_of,
    token,
    until,
    upstream_subdir,
)

UP = "https://up.example/cf"
ADMIN, CF_ADMIN, READ, WRITE = (
    "admin-token-0001",
    "cf-admin-00001",
    "reader-0000001",
    "writer-000001",
)
LINUX = {
    "alpha-1.0-0.conda": b"a" * 1000,
    "alpha-1.1-0.conda": b"A" * 1100,
    "beta-1.0-0.conda": b"b" * 700,
}
NOARCH = {"gamma-1.0-0.conda": b"g" * 300}
FILES = {f"linux-64/{fn}": data for fn, data in LINUX.items()} | {
    f"noarch/{fn}": data for fn, data in NOARCH.items()
}
TOOL = Pkg("mytool", "1.0", "h0", "linux-64")


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mocked:
        upstream_subdir(
            mocked,
            UP,
            "linux-64",
            LINUX,
            extra={"missing-1.0-0.conda": record("missing-1.0-0.conda", b"never served")},
        )
        upstream_subdir(mocked, UP, "noarch", NOARCH)
        mocked.get(f"{UP}/linux-64/missing-1.0-0.conda").respond(404)
        upstream_subdir(mocked, "https://up.example/team", "linux-64", {}, sharded=True)
        yield mocked


@pytest.fixture
def client(tmp_path: Path, router) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path / "cache",
        [
            ChannelSettings("cf", UP),
            ChannelSettings("team", "https://up.example/team"),
            ChannelSettings("local"),
        ],
        [
            token("ops", ADMIN, star="admin"),
            token("cfops", CF_ADMIN, cf="admin"),
            token("reader", READ, cf="read"),
            token("ci", WRITE, team="write", local="write"),
        ],
    )
    with TestClient(create_app(settings, clock=Clock())) as c:
        yield c


def as_admin(key: str = ADMIN) -> dict[str, str]:
    return {"x-api-key": key}


def settle(client: TestClient) -> None:
    """Downloads finish their commit after the client has its bytes: wait for that."""
    client.portal.call(services_of(client.app).downloads.aclose)


def fill(client: TestClient) -> None:
    for path, data in FILES.items():
        assert client.get(f"/cf/{path}").content == data
    settle(client)


def outcomes(client: TestClient) -> dict[str, str]:
    return {path: client.head(f"/cf/{path}").headers["x-cache"] for path in FILES}


def test_stats_count_what_the_cache_holds(client):
    empty = client.get("/api/cache/stats", headers=as_admin())
    assert empty.status_code == 200
    assert empty.json()["channels"]["cf"] == {
        "files": 0, "bytes": 0, "hits": 0, "misses": 0, "revalidated": 0, "coalesced": 0,
        "stale_serves": 0, "upstream_errors": 0,
    }  # fmt: skip
    fill(client)
    assert client.get("/cf/linux-64/beta-1.0-0.conda").headers["x-cache"] == "HIT"
    stats = client.get("/api/cache/stats", headers=as_admin()).json()
    cf = stats["channels"]["cf"]
    assert cf["files"] == 4 and cf["bytes"] == sum(len(d) for d in FILES.values())
    assert cf["misses"] == 4 and cf["hits"] == 1
    assert stats["channels"]["team"]["files"] == 0
    assert stats["store"]["bytes"] == cf["bytes"] and stats["store"]["max_size"] is None
    assert stats["store"]["free_disk"] > 0 and stats["store"]["min_free"] == 0
    assert stats["prefetch"] == []


ADMIN_CALLS = [
    ("GET", "/api/cache/stats"),
    ("DELETE", "/api/cache"),
    ("DELETE", "/api/cache/cf"),
    ("DELETE", "/api/cache/cf/linux-64/alpha-1.0-0.conda"),
    ("POST", "/api/cache/cf/linux-64/prefetch"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
@pytest.mark.parametrize(
    ("key", "global_status", "cf_status"),
    [
        (None, 401, 401),
        ("wrong-token-00", 401, 401),
        (READ, 403, 403),
        (WRITE, 403, 403),
        (CF_ADMIN, 403, None),
    ],
)
def test_admin_calls_need_an_admin_token_for_their_scope(
    client, method, path, key, global_status, cf_status
):
    scoped = "/cf" in path
    status = cf_status if scoped else global_status
    body = ["beta-1.0-0.conda"] if method == "POST" else None  # a purge takes no body
    answer = client.request(method, path, headers={"x-api-key": key} if key else {}, json=body)
    if status is None:  # a channel admin acts on its channel
        assert answer.status_code in (200, 202), answer.text
        return
    assert answer.status_code == status, answer.text
    assert answer.json()["status"] == status


def test_a_token_in_the_path_reaches_the_api(client):
    assert client.get(f"/t/{ADMIN}/api/cache/stats").status_code == 200


@pytest.mark.parametrize(
    ("scope", "removed", "gone"),
    [
        ("", {"files": 4, "metadata": 2}, set(FILES)),
        ("/cf", {"files": 4, "metadata": 2}, set(FILES)),
        ("/cf/noarch", {"files": 1, "metadata": 1}, {"noarch/gamma-1.0-0.conda"}),
        (
            "/cf/linux-64/beta-1.0-0.conda",
            {"files": 1, "metadata": 0},
            {"linux-64/beta-1.0-0.conda"},
        ),
        (
            "/cf?package=alpha",
            {"files": 2, "metadata": 0},
            {"linux-64/alpha-1.0-0.conda", "linux-64/alpha-1.1-0.conda"},
        ),
        (
            "/cf/linux-64?package=alpha",
            {"files": 2, "metadata": 0},
            {"linux-64/alpha-1.0-0.conda", "linux-64/alpha-1.1-0.conda"},
        ),
        ("?metadata_only=true", {"files": 0, "metadata": 2}, set()),
        ("/team", {"files": 0, "metadata": 0}, set()),
    ],
)
def test_purge_removes_exactly_its_scope(client, router, scope, removed, gone):
    fill(client)
    answer = client.delete(f"/api/cache{scope}", headers=as_admin())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert {k: body["removed"][k] for k in ("files", "metadata")} == removed
    assert body["removed"]["bytes"] >= sum(len(FILES[p]) for p in gone)
    after = outcomes(client)
    assert {p for p, outcome in after.items() if outcome != "HIT"} == gone
    for path in gone:  # purged files come from the upstream again, whole
        assert client.get(f"/cf/{path}").content == FILES[path]


def test_the_purge_scope_is_echoed(client):
    answer = client.delete(
        "/api/cache/cf/linux-64?package=alpha&metadata_only=1", headers=as_admin()
    )
    assert answer.json()["scope"] == {
        "channel": "cf",
        "subdir": "linux-64",
        "package": "alpha",
        "metadata_only": True,
    }


def test_purge_never_touches_uploads_or_the_shards_made_from_them(client, tmp_path):
    data = built(tmp_path / "pkg", TOOL)[TOOL.filename]
    upload = client.post(
        f"/api/channels/team/upload/{TOOL.filename}", content=data, headers={"x-api-key": WRITE}
    )
    assert upload.status_code == 201
    index = client.get("/team/linux-64/repodata_shards.msgpack.zst")
    assert index.status_code == 200
    digest = decode_index(index.content)["shards"]["mytool"].hex()
    fill(client)
    removed = client.delete("/api/cache", headers=as_admin()).json()["removed"]
    assert removed["files"] == 4, "the four cached packages, not the upload or its shard"
    assert client.get(f"/team/linux-64/{TOOL.filename}").content == data
    assert client.get(f"/team/linux-64/shards/{digest}.msgpack.zst").status_code == 200
    assert TOOL.filename in client.get("/team/linux-64/repodata.json").json()["packages.conda"]


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/api/cache/nowhere", 404, "unknown channel"),
        ("/api/cache/cf/linux64", 400, "not a conda subdir"),
        ("/api/cache/cf/linux-64/a/b", 400, "<channel>[/<subdir>[/<filename>]]"),
        ("/api/cache/cf/linux-64/index.html", 400, "not a file a conda channel serves"),
        ("/api/cache/cf?package=no%20such", 400, "not a conda package name"),
        ("/api/cache/cf?metadata_only=maybe", 400, "metadata_only"),
        ("/api/cache/cf/%2e%2e/x", 400, ""),
    ],
)
def test_a_purge_scope_that_names_nothing_is_refused(client, path, status, says):
    answer = client.delete(path, headers=as_admin())
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]


def test_every_admin_call_leaves_one_audit_event(client):
    with capture_logs() as events:
        client.delete("/api/cache/cf", headers=as_admin())
        client.delete("/api/cache/cf", headers=as_admin(READ))
        client.post("/api/cache/cf/noarch/prefetch", json=["gamma-1.0-0.conda"], headers=as_admin())
    audits = [e for e in events if e["event"] == "audit"]
    assert [(a["action"], a["token"], a["result"][:12]) for a in audits] == [
        ("purge", "ops", "ok"),
        ("purge", "reader", "refused 403:"),
        ("prefetch", "ops", "ok"),
    ]
    assert json.loads(audits[0]["target"]) == {"channel": "cf"}
    assert audits[2]["target"] == "cf/noarch"


# prefetch


def finished(client: TestClient, job_id: str) -> dict:
    prefetcher = services_of(client.app).prefetcher

    def job() -> dict:
        return next(j for j in prefetcher.jobs() if j["id"] == job_id)

    async def wait() -> None:
        await until(lambda: job()["state"] in ("done", "failed"))

    client.portal.call(wait)
    return job()


def prefetch(client: TestClient, body, subdir: str = "linux-64", channel: str = "cf") -> dict:
    answer = client.post(f"/api/cache/{channel}/{subdir}/prefetch", json=body, headers=as_admin())
    assert answer.status_code == 202, answer.text
    return answer.json()


def test_prefetch_of_file_names_fills_the_cache_and_reports_progress(client, router):
    job = prefetch(client, ["alpha-1.0-0.conda", "beta-1.0-0.conda"])
    assert job["state"] == "resolving" and job["created_at"] == 1_800_000_000.0
    done = finished(client, job["id"])
    assert (done["state"], done["total"], done["fetched"], done["already_cached"]) == (
        "done",
        2,
        2,
        0,
    )
    assert done["failures"] == [] and done["finished_at"] == 1_800_000_000.0
    settle(client)
    assert outcomes(client)["linux-64/alpha-1.0-0.conda"] == "HIT"
    again = finished(client, prefetch(client, {"packages": ["beta-1.0-0.conda"]})["id"])
    assert again["already_cached"] == 1
    stats = client.get("/api/cache/stats", headers=as_admin()).json()
    assert [j["id"] for j in stats["prefetch"]] == [again["id"], done["id"]], "newest first"
    assert router.get(f"{UP}/linux-64/beta-1.0-0.conda").call_count == 1


def test_a_prefetch_that_cannot_fetch_a_file_fails_visibly(client):
    job = finished(client, prefetch(client, ["missing-1.0-0.conda", "beta-1.0-0.conda"])["id"])
    assert job["state"] == "failed" and job["fetched"] == 1
    assert job["failures"] == [
        {"file": "linux-64/missing-1.0-0.conda", "error": job["failures"][0]["error"]}
    ]
    assert "not found" in job["failures"][0]["error"]


def test_prefetch_in_a_channel_with_uploads_counts_them_as_cached(client, tmp_path):
    data = built(tmp_path / "pkg", TOOL)[TOOL.filename]
    for channel in ("team", "local"):
        client.post(
            f"/api/channels/{channel}/upload/{TOOL.filename}",
            content=data,
            headers={"x-api-key": WRITE},
        )
    team = finished(client, prefetch(client, [TOOL.filename], channel="team")["id"])
    assert (team["state"], team["already_cached"]) == ("done", 1)
    local = finished(
        client, prefetch(client, [TOOL.filename, "other-1.0-0.conda"], channel="local")["id"]
    )
    assert local["state"] == "failed" and local["already_cached"] == 1
    assert "not in local channel" in local["failures"][0]["error"]


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/api/cache/cf/linux-64/prefetch", b"not json", 400, "not JSON"),
        ("/api/cache/cf/linux-64/prefetch", b'"numpy"', 400, "JSON list"),
        ("/api/cache/cf/linux-64/prefetch", b'{"packages": []}', 400, "non-empty list"),
        ("/api/cache/cf/linux-64/prefetch", b'["ok", 3]', 400, "non-empty list"),
        (
            "/api/cache/cf/linux-64/prefetch",
            b'{"packages": ["x"], "with_dependencies": "yes"}',
            400,
            "with_dependencies",
        ),
        ("/api/cache/cf/linux-64/prefetch", json.dumps(["x"] * 10_001).encode(), 400, "at most"),
        ("/api/cache/cf/prefetch", b'["x"]', 400, "prefetch is POST"),
        ("/api/cache/cf/linux-64/a-1-0.conda/prefetch", b'["x"]', 400, "prefetch is POST"),
        ("/api/cache/nowhere/linux-64/prefetch", b'["x"]', 404, "unknown channel"),
    ],
)
def test_a_prefetch_request_that_says_nothing_usable_is_refused(client, path, body, status, says):
    answer = client.post(path, content=body, headers=as_admin())
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]


def test_prefetch_of_match_specs_with_dependencies_solves_with_py_rattler(client, router):
    """The one test that runs the resolver (py-rattler, in its own short-lived process)."""
    files = {
        "app-1.0-0.conda": b"app" * 100,
        "lib-1.0-0.conda": b"l1" * 100,
        "lib-2.0-0.conda": b"l2" * 100,
    }
    depends = {"app-1.0-0.conda": ["lib >=1"]}
    routes = upstream_subdir(
        router,
        UP,
        "osx-64",
        files,
        extra={
            fn: record(
                fn, data, depends=depends.get(fn, []), subdir="osx-64", timestamp=1_700_000_000_000
            )
            for fn, data in files.items()
        },
    )
    job = finished(
        client,
        prefetch(client, {"packages": ["app"], "with_dependencies": True}, subdir="osx-64")["id"],
    )
    assert job["state"] == "done", job
    assert (job["total"], job["fetched"]) == (2, 2)
    assert routes["app-1.0-0.conda"].call_count == 1 and routes["lib-2.0-0.conda"].call_count == 1
    assert routes["lib-1.0-0.conda"].call_count == 0
    nothing = finished(client, prefetch(client, ["nosuchthing >=1"], subdir="osx-64")["id"])
    assert nothing["state"] == "failed" and "nosuchthing" in nothing["error"]


def test_prefetch_answers_never_show_which_process_runs_the_job(client, router):
    job = prefetch(client, ["alpha-1.0-0.conda"])
    assert "owner" not in job and job["state"] == "resolving"
    done = finished(client, job["id"])
    assert "owner" not in done and done["state"] == "done"
