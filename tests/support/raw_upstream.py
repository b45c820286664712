"""An upstream on a raw socket, for answers no HTTP server library would send (interim 1xx
heads, a head a byte at a time, bodies framed without Content-Length, control characters in
header values): each request's path picks a function that writes the whole answer itself."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support.hostile import ADMIN_TOKEN, http, no_crash_in_log
from tests.support.processes import Proxy, write_config

Answer = Callable[[socket.socket], None]
MISSING = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


def whole(body: bytes, head: bytes = b"") -> Answer:
    """A 200 with Content-Length, `head` (header lines, each ending in CRLF) added."""
    return lambda conn: conn.sendall(
        b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
    )


class RawUpstream:
    """Answers each request for a path with what `answers` holds for it (404 otherwise), then
    closes the connection."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
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
            self.answers.get(path, lambda c: c.sendall(MISSING))(conn)


@contextlib.contextmanager
def raw_proxy(base: Path, ttl: int = 60) -> Iterator[tuple[RawUpstream, Proxy]]:
    """A RawUpstream and a `condaproxy serve` proxying it as channel `raw` (an admin token
    ADMIN_TOKEN); the proxy's log is checked for crashes when the block ends."""
    upstream = RawUpstream()
    admin: dict[str, object] = {"token": ADMIN_TOKEN, "roles": {"*": "admin"}}
    config = write_config(
        base / "proxy.toml",
        base / "cache",
        {"raw": {"upstream": upstream.url}},
        ttl,
        tokens={"ops": admin},
    )
    proxy = Proxy(config).start()
    try:
        yield upstream, proxy
    finally:
        proxy.stop()
        upstream.sock.close()
    no_crash_in_log(proxy.log())


def purge(proxy: Proxy) -> None:
    with http() as client:
        client.delete(f"{proxy.url}/api/cache", headers={"x-api-key": ADMIN_TOKEN})
