"""The upload API in-process: Quetz raw uploads and multipart uploads, listing and deleting,
who may do what, and what clients then see (the file served, every repodata variant and the
shard index merged, shadowing), with respx standing in for the upstream and real packages
built by conda-package-handling."""

from __future__ import annotations

import bz2
import hashlib
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import respx
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from condaproxy.cache import merging
from condaproxy.rules.codecs import zstd_decompress
from condaproxy.settings import ChannelSettings, UploadSettings
from condaproxy.web.app import create_app
from tests.support.channel import Pkg
from tests.support.inproc import (
    Clock,
    built,
    decode_index,
    make_settings,
    record,
    services_of,
    shard,
    token,
    upstream_subdir,
)

UP = "https://up.example/team"
WRITE, READ, ADMIN = "writer-token-1234", "reader-token-1234", "admin-token-12345"
LIMIT = 256 * 1024  # uploads.max_upload_size: far above the packages, far below a bomb

TOOL = Pkg("mytool", "1.0", "h0", "linux-64")
TOOL_NEXT = Pkg("mytool", "1.1", "h0", "linux-64")
HELPER = Pkg("helper", "0.1", "0", "noarch", ext=".tar.bz2")
MAC = Pkg("maconly", "1.0", "0", "osx-64")
# Upstream: a higher version of our internal name (dependency confusion) and an unrelated one.
CONFUSER = {"mytool-99.0-0.conda": b"attacker's mytool" * 10, "other-1.0-0.conda": b"o" * 300}


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return built(tmp_path_factory.mktemp("packages"), TOOL, TOOL_NEXT, HELPER, MAC)


@pytest.fixture(scope="module")
def replacement(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """mytool-1.0-h0.conda again, with other bytes (the payload is random)."""
    return built(tmp_path_factory.mktemp("again"), TOOL)[TOOL.filename]


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mocked:
        upstream_subdir(mocked, UP, "linux-64", CONFUSER, sharded=True)
        upstream_subdir(mocked, UP, "noarch", {})
        mocked.get(f"{UP}/osx-64/repodata.json.zst").respond(404)
        mocked.get(f"{UP}/osx-64/repodata.json").respond(404)
        mocked.get(f"{UP}/osx-64/repodata_shards.msgpack.zst").respond(404)
        yield mocked


@pytest.fixture
def client(tmp_path: Path, router: respx.MockRouter) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path / "cache",
        [
            ChannelSettings("team", UP),
            ChannelSettings("mirror", UP, mirror_only=True),
            ChannelSettings("local"),
            ChannelSettings("secret", UP, private=True),
            ChannelSettings("allow", UP, allow_upstream=("mytool",)),
        ],
        [
            token(
                "writer",
                WRITE,
                team="write",
                local="write",
                mirror="write",
                secret="write",
                allow="write",
            ),
            token("reader", READ, team="read", secret="read"),
            token("admin", ADMIN, star="admin"),
        ],
        uploads=UploadSettings(max_upload_size=LIMIT),
    )
    with TestClient(create_app(settings, clock=Clock())) as c:
        yield c


def post(
    client: TestClient,
    channel: str,
    filename: str,
    data: bytes,
    key: str | None = WRITE,
    **params: str,
):
    headers = {"x-api-key": key} if key else {}
    return client.post(
        f"/api/channels/{channel}/upload/{filename}", content=data, params=params, headers=headers
    )


def multipart(client: TestClient, channel: str, files: dict[str, bytes], **params: str):
    parts = [("files", (fn, data, "application/octet-stream")) for fn, data in files.items()]
    return client.post(
        f"/api/channels/{channel}/files", files=parts, params=params, headers={"x-api-key": WRITE}
    )


def listing(client: TestClient, channel: str = "team") -> list[str]:
    got = client.get(f"/api/channels/{channel}/packages", headers={"x-api-key": READ})
    return [f"{p['subdir']}/{p['filename']}" for p in got.json()["packages"]]


def repodata_of(client: TestClient, path: str) -> dict:
    response = client.get(path)
    assert response.status_code == 200, response.text
    return msgspec.json.decode(response.content)


def leftovers(client: TestClient) -> list[Path]:
    """Upload blobs and temp files: what a refused upload must not leave."""
    root = services_of(client.app).settings.cache.path
    return sorted(p for d in ("uploads/blobs", "tmp") for p in (root / d).rglob("*") if p.is_file())


def test_a_raw_upload_is_served_and_merged_into_every_variant_and_the_shard_index(client, packages):
    data = packages[TOOL.filename]
    sha = hashlib.sha256(data).hexdigest()
    before = client.get("/team/linux-64/repodata.json")
    assert "mytool-99.0-0.conda" in before.json()["packages.conda"]

    answer = post(client, "team", TOOL.filename, data, sha256=sha)
    assert answer.status_code == 201, answer.text
    assert answer.json() == {
        "name": "mytool", "version": "1.0", "build": "h0", "subdir": "linux-64",
        "filename": TOOL.filename, "size": len(data), "sha256": sha,
        "uploaded_at": 1_800_000_000.0, "uploaded_by": "writer",
    }  # fmt: skip

    served = client.get(f"/team/linux-64/{TOOL.filename}")
    assert served.content == data and served.headers["etag"] == f'"{sha}"'
    assert served.headers["x-cache"] == "HIT"

    json_doc = client.get("/team/linux-64/repodata.json")
    assert json_doc.headers["etag"] != before.headers["etag"]
    conda = json_doc.json()["packages.conda"]
    assert conda[TOOL.filename]["sha256"] == sha
    assert conda[TOOL.filename]["md5"] == hashlib.md5(data).hexdigest()
    assert "mytool-99.0-0.conda" not in conda, "the local name hides the upstream's"
    assert "other-1.0-0.conda" in conda
    assert zstd_decompress(client.get("/team/linux-64/repodata.json.zst").content) == (
        json_doc.content
    )
    assert bz2.decompress(client.get("/team/linux-64/repodata.json.bz2").content) == (
        json_doc.content
    )
    assert client.get("/team/linux-64/current_repodata.json").content == json_doc.content

    index = decode_index(client.get("/team/linux-64/repodata_shards.msgpack.zst").content)
    assert index["info"]["base_url"] == "./" and index["info"]["shards_base_url"] == "./shards/"
    upstream_other = hashlib.sha256(
        shard({"other-1.0-0.conda": record("other-1.0-0.conda", CONFUSER["other-1.0-0.conda"])})
    ).digest()
    assert index["shards"]["other"] == upstream_other
    local_shard = client.get(f"/team/linux-64/shards/{index['shards']['mytool'].hex()}.msgpack.zst")
    assert local_shard.status_code == 200
    assert hashlib.sha256(local_shard.content).digest() == index["shards"]["mytool"]
    records = msgspec.msgpack.decode(zstd_decompress(local_shard.content))["packages.conda"]
    assert set(records) == {TOOL.filename}
    assert records[TOOL.filename]["sha256"] == bytes.fromhex(sha)


def test_every_change_moves_the_merged_views_to_new_etags(client, packages):
    assert post(client, "team", TOOL.filename, packages[TOOL.filename]).status_code == 201
    paths = ["/team/linux-64/repodata.json", "/team/linux-64/repodata_shards.msgpack.zst"]
    first = {p: client.get(p).headers["etag"] for p in paths}
    assert {p: client.get(p).headers["etag"] for p in paths} == first, "unchanged: same ETags"
    assert post(client, "team", TOOL_NEXT.filename, packages[TOOL_NEXT.filename]).status_code == 201
    second = {p: client.get(p).headers["etag"] for p in paths}
    assert all(second[p] != first[p] for p in paths)
    assert set(client.get(paths[0]).json()["packages.conda"]) >= {TOOL.filename, TOOL_NEXT.filename}
    delete = client.delete(
        f"/api/channels/team/packages/linux-64/{TOOL_NEXT.filename}", headers={"x-api-key": WRITE}
    )
    assert delete.status_code == 200
    third = {p: client.get(p).headers["etag"] for p in paths}
    assert all(third[p] != second[p] for p in paths)


def test_multipart_upload_of_several_files_then_list_and_delete(client, router, packages):
    files = {HELPER.filename: packages[HELPER.filename], TOOL.filename: packages[TOOL.filename]}
    answer = multipart(client, "team", files)
    assert answer.status_code == 201, answer.text
    assert sorted(u["filename"] for u in answer.json()["uploaded"]) == sorted(files)
    assert listing(client) == [f"linux-64/{TOOL.filename}", f"noarch/{HELPER.filename}"]
    noarch = repodata_of(client, "/team/noarch/repodata.json")
    assert noarch["packages"][HELPER.filename]["subdir"] == "noarch"

    gone = router.get(f"{UP}/noarch/{HELPER.filename}").respond(404)
    deleted = client.delete(
        f"/api/channels/team/packages/noarch/{HELPER.filename}", headers={"x-api-key": WRITE}
    )
    assert deleted.status_code == 200 and deleted.json()["deleted"]["filename"] == HELPER.filename
    assert listing(client) == [f"linux-64/{TOOL.filename}"]
    assert HELPER.filename not in repodata_of(client, "/team/noarch/repodata.json")["packages"]
    assert client.get(f"/team/noarch/{HELPER.filename}").status_code == 404
    assert gone.call_count == 1, "once deleted, the file is the upstream's business"
    again = client.delete(
        f"/api/channels/team/packages/noarch/{HELPER.filename}", headers={"x-api-key": WRITE}
    )
    assert again.status_code == 404


def test_an_existing_file_needs_force_to_be_replaced(client, packages, replacement):
    original = packages[TOOL.filename]
    assert post(client, "team", TOOL.filename, original).status_code == 201
    conflict = post(client, "team", TOOL.filename, replacement)
    assert conflict.status_code == 409 and "force=true" in conflict.json()["error"]
    assert client.get(f"/team/linux-64/{TOOL.filename}").content == original
    bad_flag = post(client, "team", TOOL.filename, replacement, force="perhaps")
    assert bad_flag.status_code == 400 and bad_flag.json()["parameter"] == "force"
    forced = post(client, "team", TOOL.filename, replacement, force="true")
    assert forced.status_code == 201
    assert client.get(f"/team/linux-64/{TOOL.filename}").content == replacement
    blobs = [p.name for p in leftovers(client)]
    assert blobs == [hashlib.sha256(replacement).hexdigest()], "the replaced blob is gone"


def test_multipart_force_replaces_too(client, packages, replacement):
    assert multipart(client, "team", {TOOL.filename: packages[TOOL.filename]}).status_code == 201
    assert multipart(client, "team", {TOOL.filename: replacement}).status_code == 409
    assert multipart(client, "team", {TOOL.filename: replacement}, force="1").status_code == 201
    assert client.get(f"/team/linux-64/{TOOL.filename}").content == replacement


@pytest.mark.parametrize(
    ("given", "says"),
    [("0" * 64, "not the " + "0" * 64 + " given"), ("xyz", "64 hex digits")],
)
def test_a_sha256_the_body_does_not_have_is_refused_and_nothing_stays(
    client, packages, given, says
):
    answer = post(client, "team", TOOL.filename, packages[TOOL.filename], sha256=given)
    assert answer.status_code == 400 and says in answer.json()["error"]
    assert leftovers(client) == [] and listing(client) == []


@pytest.mark.parametrize(
    ("filename", "body", "says"),
    [
        (TOOL.filename, b"not a zip at all" * 10, "corrupt or truncated archive"),
        ("mytool-2.0-h0.conda", None, "index.json"),  # the name lies about the contents
        ("mytool.zip", None, "<name>-<version>-<build>"),
    ],
)
def test_a_package_that_is_not_what_it_says_is_refused_and_nothing_stays(
    client, packages, filename, body, says
):
    answer = post(client, "team", filename, body or packages[TOOL.filename])
    assert answer.status_code == 400, answer.text
    assert says in answer.json()["error"]
    assert leftovers(client) == [] and listing(client) == []


ROUTES = ["raw", "multipart", "delete"]


def call(client: TestClient, route: str, channel: str, headers: dict, data: bytes):
    if route == "raw":
        url = f"/api/channels/{channel}/upload/{TOOL.filename}"
        return client.post(url, content=data, headers=headers)
    if route == "multipart":
        files = [("files", (TOOL.filename, data, "application/octet-stream"))]
        return client.post(f"/api/channels/{channel}/files", files=files, headers=headers)
    url = f"/api/channels/{channel}/packages/linux-64/{TOOL.filename}"
    return client.delete(url, headers=headers)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    ("channel", "headers", "status", "says"),
    [
        ("team", {}, 401, "a token is required"),
        ("team", {"x-api-key": "no-such-token-000"}, 401, "unknown token"),
        ("team", {"authorization": f"Bearer {READ}"}, 403, "may not write"),
        ("team", {"authorization": f"Bearer {ADMIN}"}, None, None),  # admin includes write
        ("mirror", {"x-api-key": WRITE}, 403, "mirror of its upstream"),
        ("nowhere", {"x-api-key": WRITE}, 404, "unknown channel"),
    ],
)
def test_who_may_change_a_channel(client, packages, route, channel, headers, status, says):
    answer = call(client, route, channel, headers, packages[TOOL.filename])
    if status is None:
        assert answer.status_code in (200, 201, 404), answer.text  # delete of nothing: 404
        return
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]
    if status == 401:
        assert "Bearer" in answer.headers["www-authenticate"]
    if status == 404:
        assert "team" in answer.json()["channels"]
    assert leftovers(client) == []


def test_a_token_in_the_path_works_for_the_api_too(client, packages):
    url = f"/t/{WRITE}/api/channels/team/upload/{TOOL.filename}"
    assert client.post(url, content=packages[TOOL.filename]).status_code == 201
    assert listing(client) == [f"linux-64/{TOOL.filename}"]


def test_listing_a_private_channel_needs_a_read_token(client, packages):
    assert post(client, "secret", TOOL.filename, packages[TOOL.filename]).status_code == 201
    assert client.get("/api/channels/secret/packages").status_code == 401
    assert listing(client, "secret") == [f"linux-64/{TOOL.filename}"]
    assert client.get(f"/secret/linux-64/{TOOL.filename}").status_code == 401
    got = client.get(f"/secret/linux-64/{TOOL.filename}", headers={"x-api-key": READ})
    assert got.content == packages[TOOL.filename]


@pytest.mark.parametrize(
    ("method", "path", "status", "says"),
    [
        (
            "DELETE",
            f"/api/channels/team/packages/linux64/{TOOL.filename}",
            400,
            "not a conda subdir",
        ),
        ("DELETE", "/api/channels/team/packages/linux-64/mytool.zip", 400, "<name>-<version>"),
        ("GET", "/api/channels/team/uploads", 404, "no API endpoint"),
        ("POST", "/api/channels/team/packages", 405, "use GET or HEAD"),
        ("PUT", "/api/channels/team/packages", 405, "use GET or HEAD"),
    ],
)
def test_api_paths_that_mean_nothing_are_json_errors(client, method, path, status, says):
    answer = client.request(method, path, headers={"x-api-key": WRITE})
    assert answer.status_code == status
    assert says in answer.json()["error"]


def test_refusals_are_one_warning_and_every_change_one_audit_event(client, packages):
    data = packages[TOOL.filename]
    with capture_logs() as events:
        assert post(client, "team", TOOL.filename, data).status_code == 201
        assert post(client, "team", TOOL.filename, data).status_code == 409
        assert post(client, "team", TOOL.filename, data, key=READ).status_code == 403
    audits = [e for e in events if e["event"] == "audit"]
    assert [(a["action"], a["token"], a["result"][:12]) for a in audits] == [
        ("upload", "writer", "ok"),
        ("upload", "writer", "refused 409:"),
        ("upload", "reader", "refused 403:"),
    ]
    assert all(a["target"] == f"team/{TOOL.filename}" for a in audits)
    refusals = [e for e in events if e["event"] == "upload refused"]
    assert [(e["log_level"], e["status"]) for e in refusals] == [("warning", 409), ("warning", 403)]
    uploaded = [e for e in events if e["event"] == "uploaded"]
    assert uploaded[0]["bytes"] == len(data) and uploaded[0]["by"] == "writer"


# bodies: limits and framing


def test_a_declared_length_over_the_limit_is_refused_before_reading(client):
    answer = post(client, "team", TOOL.filename, b"\0" * (LIMIT + 1))
    assert answer.status_code == 413 and answer.json()["max_upload_size"] == LIMIT
    assert answer.headers["connection"] == "close"
    assert leftovers(client) == []


@pytest.mark.parametrize("route", ["raw", "multipart"])
def test_a_chunked_body_stops_at_the_limit(client, route):
    def chunks() -> Iterator[bytes]:
        if route == "multipart":
            yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="a-1-0.conda"'
            yield b"\r\n\r\n"
        for _ in range(LIMIT // 4096 + 2):
            yield b"\0" * 4096

    path = f"upload/{TOOL.filename}" if route == "raw" else "files"
    headers = {"x-api-key": WRITE, "content-type": "multipart/form-data; boundary=b"}
    answer = client.post(f"/api/channels/team/{path}", content=chunks(), headers=headers)
    assert answer.status_code == 413
    assert leftovers(client) == []


def body(*parts: tuple[str, str | None, bytes], boundary: str = "b", close: bool = True) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += (
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
        )
    return out + (f"--{boundary}--\r\n".encode() if close else b"")


@pytest.mark.parametrize(
    ("content_type", "payload", "says"),
    [
        ("application/octet-stream", b"x", "multipart/form-data with a boundary"),
        ("multipart/form-data", b"x", "multipart/form-data with a boundary"),
        ("multipart/form-data; boundary=b", body(("note", None, b"hello")), "holds no file"),
        (
            "multipart/form-data; boundary=b",
            body(("files", "a-1-0.conda", b"x"), close=False),
            "ended before its closing boundary",
        ),
        (
            "multipart/form-data; boundary=b",
            b"garbage before any boundary\r\n",
            "malformed multipart",
        ),
        ("multipart/form-data; boundary=b", body(("note", None, b"n" * 70_000)), "more than 65536"),
        (
            "multipart/form-data; boundary=b",
            body(*[("files", f"a{i}-1-0.conda", b"x") for i in range(101)]),
            "more than 100 files",
        ),
    ],
    ids=[
        "not-multipart",
        "no-boundary",
        "no-files",
        "unclosed",
        "garbage",
        "big-field",
        "101-files",
    ],
)
def test_a_multipart_body_that_is_not_one_is_a_400(client, content_type, payload, says):
    answer = client.post(
        "/api/channels/team/files",
        content=payload,
        headers={"x-api-key": WRITE, "content-type": content_type},
    )
    assert answer.status_code == 400, answer.text
    assert says in answer.json()["error"]
    assert leftovers(client) == []


def test_one_bad_file_in_a_multipart_upload_refuses_them_all(client, packages):
    files = {TOOL.filename: packages[TOOL.filename], HELPER.filename: b"corrupt" * 20}
    answer = multipart(client, "team", files)
    assert answer.status_code == 400
    assert listing(client) == [] and leftovers(client) == []


def test_a_conflict_in_a_multipart_upload_records_none_of_its_files(client, packages):
    """README: an existing file without force=true is a 409 that 'leaves nothing behind'; every
    package of a multipart upload is checked before any is recorded."""
    assert post(client, "team", TOOL.filename, packages[TOOL.filename]).status_code == 201
    files = {HELPER.filename: packages[HELPER.filename], TOOL.filename: packages[TOOL.filename]}
    answer = multipart(client, "team", files)
    assert answer.status_code == 409
    assert listing(client) == [f"linux-64/{TOOL.filename}"], "a 409 recorded the other file"


# channels without an upstream, subdirs the upstream lacks, allow_upstream


def test_a_local_only_channel_is_served_from_its_uploads_alone(client, packages):
    assert post(client, "local", TOOL.filename, packages[TOOL.filename]).status_code == 201
    linux = repodata_of(client, "/local/linux-64/repodata.json")
    assert set(linux["packages.conda"]) == {TOOL.filename}
    noarch = repodata_of(client, "/local/noarch/repodata.json")
    assert noarch["packages"] == {} and noarch["packages.conda"] == {}, "noarch always exists"
    assert client.get("/local/osx-64/repodata.json").status_code == 404
    assert client.get("/local/osx-64/repodata_shards.msgpack.zst").status_code == 404
    index = decode_index(client.get("/local/linux-64/repodata_shards.msgpack.zst").content)
    digest = index["shards"]["mytool"].hex()
    assert client.get(f"/local/linux-64/shards/{digest}.msgpack.zst").status_code == 200
    assert client.get(f"/local/linux-64/shards/{'0' * 64}.msgpack.zst").status_code == 404
    missing = client.get("/local/linux-64/absent-1.0-0.conda")
    assert missing.status_code == 404 and "local channel 'local'" in missing.json()["error"]
    assert client.get("/local/channeldata.json").status_code == 404


def test_uploads_to_a_subdir_the_upstream_lacks_are_all_it_has(client, packages):
    assert post(client, "team", MAC.filename, packages[MAC.filename]).status_code == 201
    osx = repodata_of(client, "/team/osx-64/repodata.json")
    assert set(osx["packages.conda"]) == {MAC.filename}
    assert osx["info"]["subdir"] == "osx-64"


def test_allow_upstream_shows_the_upstream_records_of_a_local_name(client, router, packages):
    assert post(client, "allow", TOOL.filename, packages[TOOL.filename]).status_code == 201
    conda = repodata_of(client, "/allow/linux-64/repodata.json")["packages.conda"]
    assert {TOOL.filename, "mytool-99.0-0.conda", "other-1.0-0.conda"} <= set(conda)
    index = decode_index(client.get("/allow/linux-64/repodata_shards.msgpack.zst").content)
    merged = client.get(f"/allow/linux-64/shards/{index['shards']['mytool'].hex()}.msgpack.zst")
    names = set(msgspec.msgpack.decode(zstd_decompress(merged.content))["packages.conda"])
    assert names == {TOOL.filename, "mytool-99.0-0.conda"}


def test_a_merged_view_that_cannot_be_built_is_a_503_never_the_upstream_alone(
    client, packages, monkeypatch
):
    assert post(client, "team", TOOL.filename, packages[TOOL.filename]).status_code == 201
    assert client.get("/team/linux-64/repodata.json").status_code == 200

    def fails(*_: object) -> None:
        raise ValueError("the merge failed")

    # A build that fails (a cached upstream copy that rots is found at rest and fetched
    # again, tests/hostile/test_metadata_written_over_before_first_use.py: no failure).
    monkeypatch.setattr(merging, "merge_job", fails)
    with capture_logs() as events:
        assert (
            post(client, "team", TOOL_NEXT.filename, packages[TOOL_NEXT.filename]).status_code
            == 201
        )
        answer = client.get("/team/linux-64/repodata.json")
    assert answer.status_code == 503 and "retry later" in answer.json()["error"]
    assert any(e["event"] == "merged view failed" for e in events)
