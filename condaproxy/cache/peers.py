"""Reading another replica's download while it runs ([cluster] peer_url and peer_token).

A replica that finds a file's lease held by another streams the file from that replica's
ordinary route (`GET <peer_url>/<channel>/<path>`), signed with the shared peer token (which
reads every channel) but never carrying it: the address comes from Redis, so the request holds
only a signature for that one file (rules/peer_auth.py). There the request joins the running
download like any client's: bytes as they arrive, the last one held back until the owner
verified the file. The reader here treats the peer exactly like an upstream: it hashes the
bytes, checks size and sha256, and only then lets its own last byte go and keeps the file. So
a peer is trusted for nothing but speed.

A lease naming an address that is not a plain http(s) URL (Redis returned garbage), a peer
that refuses, answers anything but 200 with a length, or sends nothing for `peer_timeout`
seconds before its headers is given up at once (the caller fetches the file itself); one that
fails mid-stream aborts the download here (its clients never got a complete body) and the
next request starts afresh.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import httpx
import structlog

from ..rules.numbers import header_number
from ..rules.peer_auth import HEADER as PEER_HEADER
from ..rules.peer_auth import sign

log = structlog.get_logger("condaproxy.cache.peers")


@dataclass
class PeerBody:
    """A peer's response read like an upstream response (the download code's interface)."""

    response: httpx.Response
    url: str
    content_length: int
    from_bucket = False

    def iter_bytes(self) -> AsyncIterator[bytes]:
        return self.response.aiter_raw()

    async def __aenter__(self) -> PeerBody:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.response.aclose()


class Peers:
    def __init__(self, own_url: str, token: str, timeout: float) -> None:
        self.own_url = own_url.rstrip("/")
        self._token = token
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)), follow_redirects=False
        )

    async def open(self, peer_url: str, key: str, sha256: str) -> PeerBody | None:
        """The file `key` as the peer streams it, or None if the peer cannot serve it."""
        peer_url = peer_url.rstrip("/")
        if not peer_url or peer_url == self.own_url:
            return None  # a lease left by this replica's previous life: never ask ourselves
        if not usable_peer(peer_url):
            # The address comes from Redis: whatever it holds costs a fetch of our own.
            log.warning("peer address unusable: fetching ourselves", peer=peer_url[:200])
            return None
        url = f"{peer_url}/{quote(key, safe='/')}"
        try:
            request = self._client.build_request(
                "GET",
                url,
                headers={
                    PEER_HEADER: sign(self._token, key, time.time()),  # never the token itself
                    "accept-encoding": "identity",
                    "x-expected-sha256": sha256,
                },
            )
            response = await self._client.send(request, stream=True)
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            log.warning(
                "peer unavailable: fetching ourselves", peer=peer_url, error=type(exc).__name__
            )
            return None
        length = header_number(response.headers.get("content-length"))
        if response.status_code != 200 or length is None:
            await response.aclose()
            log.warning(
                "peer refused: fetching ourselves", peer=peer_url, status=response.status_code
            )
            return None
        return PeerBody(response, url, length)

    async def aclose(self) -> None:
        await self._client.aclose()


def usable_peer(url: str) -> bool:
    """An address a lease may name: http(s), a host, a valid port, nothing else (the value is
    read from Redis, so it is checked like any input before a request is built from it)."""
    if not url.isascii() or not url.isprintable():
        return False
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when out of range or not a number
    except ValueError:
        return False
    return (
        parts.scheme in {"http", "https"}
        and bool(parts.hostname)
        and port != 0
        and not (parts.username or parts.password or parts.query or parts.fragment)
    )
