"""A client forges the hops header (X-Condaproxy-Hops) to fail a fetch other clients share.
The chain a client sends is forwarded on the upstream requests its request starts; a chain of
MAX_HOPS made-up tokens passes this proxy (its length is allowed) but not the next condaproxy
(one hop more). When `team` is layered over `<proxy>/cf`, the attacker's download of a package
is refused there as a loop, and every client that had joined that download was answered the
attacker's 502, though its own request (no hops at all) loops nowhere. A shared fetch's loop
refusal is now the requester's alone: a client that joined it fetches on its own, with its
own chain (a real cycle still fails for it too). Real processes."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from condaproxy.rules.loops import HOPS_HEADER, MAX_HOPS, TOKEN_CHARS
from tests.support.hostile import get_one, listed_channel
from tests.support.processes import Proxy, Upstream, free_port, write_config

pytestmark = pytest.mark.integration

SUBDIRS = ("linux-64", "osx-64", "osx-arm64", "win-64", "linux-aarch64", "linux-ppc64le")
SIZE = 4 << 20  # big enough to be a download others join, not a small in-memory file
FORGED = {
    "as-many-hops-as-allowed": ",".join(f"{i:0{TOKEN_CHARS}x}" for i in range(MAX_HOPS)),
    "one-hop-less": ",".join(f"{i:0{TOKEN_CHARS}x}" for i in range(MAX_HOPS - 1)),
}
# What the attacker and the client both ask for, in each subdir in turn (nothing cached yet):
# a package (one download, joined), and the subdir's repodata (one refresh, followed as it
# arrives with cache.refresh_passthrough, else one at a time under its lock).
KINDS = {
    "package": ("p-1.0-0.conda", False),
    "repodata.json.zst-passthrough": ("repodata.json.zst", True),
    "repodata.json": ("repodata.json", False),
}


def _status(sock: socket.socket) -> int:
    sock.settimeout(30)
    line = b""
    while b"\r\n" not in line:
        got = sock.recv(64)
        if not got:
            break
        line += got
    return int(line.split()[1]) if line.startswith(b"HTTP/") else 0


def _ask(port: int, path: str, hops: str | None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    extra = f"{HOPS_HEADER}: {hops}\r\n" if hops else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    return sock


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("forged", sorted(FORGED))
@pytest.mark.parametrize("workers", [1, 2])
def test_a_forged_hops_header_fails_only_its_own_request(
    tmp_path: Path, kind: str, forged: str, workers: int
) -> None:
    name, passthrough = KINDS[kind]
    packages = {f"{subdir}/p-1.0-0.conda": os.urandom(SIZE) for subdir in SUBDIRS}
    upstream = Upstream(listed_channel(tmp_path / "channel", packages)).start()
    port = free_port()
    me = f"http://127.0.0.1:{port}"
    channels = {"team": {"upstream": f"{me}/cf"}, "cf": {"upstream": upstream.url}}
    extra = "refresh_passthrough = true\n" if passthrough else ""
    config = write_config(tmp_path / "proxy.toml", tmp_path / "cache", channels, extra=extra)
    proxy = Proxy(config, port=port, workers=workers).start()
    try:
        if name.endswith(".conda"):  # the records are known; the packages are not cached
            for subdir in SUBDIRS:
                assert get_one(f"{proxy.url}/team/{subdir}/repodata.json").status == 200
        legit = []
        for subdir in SUBDIRS:
            attacker = _ask(port, f"/team/{subdir}/{name}", FORGED[forged])
            client = _ask(port, f"/team/{subdir}/{name}", None)
            legit.append(_status(client))
            _status(attacker)
            attacker.close()
            client.close()
        assert legit == [200] * len(SUBDIRS)
    finally:
        proxy.stop()
        upstream.stop()
