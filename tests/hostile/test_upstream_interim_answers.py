"""An upstream that accepts the request and answers with interim 1xx heads (`100 Continue`,
`103 Early Hints`), or its head a byte at a time, but never a whole final head. The read
timeout bounds each wait for bytes: aiohttp stops its read timer once an interim answer is
parsed, and each trickled byte restarts it, so the proxy waited for as long as the upstream
kept the connection open, and its client (and every client joined to the download or the
revalidation) got no answer at all, not the 504 naming the upstream. Now the whole head must
arrive within connect_timeout + read_timeout: a 504 naming the upstream, or the stale copy.

A raw socket upstream (an HTTP server library would not send such heads) and a real
`condaproxy serve` (upstream.connect_timeout 2 s, read_timeout 5 s)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.hostile import ADMIN_TOKEN, http, no_crash_in_log, record
from tests.support.processes import Proxy, write_config

pytestmark = pytest.mark.integration

PKG = "b-1.0-0.conda"
DATA = os.urandom(20_000)
REPODATA = json.dumps(
    {"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": {PKG: record(PKG, DATA)}}
).encode()
DEADLINE = 2 + 5  # connect_timeout + read_timeout in tests/support/processes.write_config
HOLD = 40  # how long each hostile answer keeps the connection open


def _then_silence(head: bytes) -> Callable[[socket.socket], None]:
    def answer(conn: socket.socket) -> None:
        conn.sendall(head)
        time.sleep(HOLD)

    return answer


def _continues(conn: socket.socket) -> None:
    for _ in range(HOLD):
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        time.sleep(1)


def _head_trickle(conn: socket.socket) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-Pad: " + b"a" * 80
    for i in range(len(head)):
        conn.sendall(head[i : i + 1])
        time.sleep(0.5)


ANSWERS: dict[str, Callable[[socket.socket], None]] = {
    "100 Continue, then nothing": _then_silence(b"HTTP/1.1 100 Continue\r\n\r\n"),
    "103 Early Hints, then nothing": _then_silence(
        b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n"
    ),
    "a 100 Continue every second": _continues,
    "the head a byte every half second": _head_trickle,
}


def _whole(body: bytes) -> Callable[[socket.socket], None]:
    return lambda conn: conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )


class RawUpstream:
    """Answers each request for a path with what `answers` holds for it (404 otherwise), then
    closes the connection."""

    def __init__(self) -> None:
        self.answers: dict[str, Callable[[socket.socket], None]] = {}
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            head = b""
            while b"\r\n\r\n" not in head:
                got = conn.recv(65536)
                if not got:
                    return
                head += got
            path = head.split(b" ")[1].decode()
            missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
            self.answers.get(path, lambda c: c.sendall(missing))(conn)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RawUpstream, Proxy]]:
    base: Path = tmp_path_factory.mktemp("interim")
    upstream = RawUpstream()
    admin: dict[str, object] = {"token": ADMIN_TOKEN, "roles": {"*": "admin"}}
    config = write_config(
        base / "proxy.toml",
        base / "cache",
        {"raw": {"upstream": upstream.url}},
        0,  # every request revalidates the repodata
        tokens={"ops": admin},
    )
    proxy = Proxy(config).start()
    try:
        yield upstream, proxy
    finally:
        proxy.stop()
        upstream.sock.close()
    no_crash_in_log(proxy.log())


def _fresh(upstream: RawUpstream, proxy: Proxy) -> None:
    with http() as client:
        client.delete(f"{proxy.url}/api/cache", headers={"x-api-key": ADMIN_TOKEN})
    upstream.answers = {
        "/linux-64/repodata.json": _whole(REPODATA),
        f"/linux-64/{PKG}": _whole(DATA),
    }


@pytest.mark.parametrize("case", list(ANSWERS))
@pytest.mark.parametrize("path", [f"linux-64/{PKG}", "linux-64/repodata.json"])
def test_a_head_that_never_completes_is_a_504_naming_the_upstream(
    served: tuple[RawUpstream, Proxy], case: str, path: str
) -> None:
    upstream, proxy = served
    _fresh(upstream, proxy)
    if path.endswith(".conda"):  # its record first, so only the package meets the answer
        with http() as client:
            assert client.get(f"{proxy.url}/raw/linux-64/repodata.json").status_code == 200
    upstream.answers[f"/{path}"] = ANSWERS[case]
    started = time.monotonic()
    with http(timeout=DEADLINE + 20) as client:
        got = client.get(f"{proxy.url}/raw/{path}")
    took = time.monotonic() - started
    assert got.status_code == 504, f"{case}: {got.status_code} {got.text[:300]}"
    assert got.json()["upstream"].startswith(upstream.url), got.text
    assert took < DEADLINE + 4, f"{case}: answered after {took:.1f}s"


@pytest.mark.parametrize("case", list(ANSWERS))
def test_a_head_that_never_completes_gives_the_stale_snapshot(
    served: tuple[RawUpstream, Proxy], case: str
) -> None:
    upstream, proxy = served
    _fresh(upstream, proxy)
    url = f"{proxy.url}/raw/linux-64/repodata.json"
    with http(timeout=DEADLINE + 20) as client:
        assert client.get(url).status_code == 200
        upstream.answers["/linux-64/repodata.json"] = ANSWERS[case]
        started = time.monotonic()
        got = client.get(url, headers={"accept-encoding": "identity"})
        took = time.monotonic() - started
    assert got.status_code == 200 and got.headers["x-cache"] == "STALE", got.status_code
    assert json.loads(got.content)["packages.conda"][PKG]["size"] == len(DATA)
    assert took < DEADLINE + 4, f"{case}: answered after {took:.1f}s"
