"""Pure rule: a request this proxy sends upstream must never come back to it. An upstream URL
that points at the proxy itself (`http://localhost:8080/conda-forge` copied from a client's
config, or two channels whose upstreams point at each other through the proxy) used to hold
every client for the upstream read timeout, then answer a 504 "timed out" that named no cause.

Every upstream request carries HOP_HEADER with this proxy's instance (one value for all
workers of one `serve`: the host and the cache directory); a channel request that arrives
with it is answered at once with a 508 that repeats it, which the sender turns into a 502
saying the upstream is the proxy itself. Other proxies (a chain of condaproxies is fine) have
other instances. No I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from .errors import ProxyError

HOP_HEADER = "x-condaproxy-instance"


def instance_id(host: str, cache_path: str) -> str:
    """An opaque name for one proxy (the host and resolved cache path are not disclosed)."""
    return hashlib.sha256(f"{host}\0{cache_path}".encode()).hexdigest()[:24]


class LoopDetected(ProxyError):
    """508: this request was sent by this very proxy to one of its upstreams."""

    status = 508

    def __init__(self, instance: str) -> None:
        super().__init__(
            "this request came from this proxy itself: a channel's upstream points back at "
            "the proxy (check channels.<name>.upstream)"
        )
        self.headers = {HOP_HEADER: instance}


def came_back(instance: str, headers: Mapping[str, str]) -> bool:
    """Whether request headers (lowercase names) carry this proxy's own instance."""
    return headers.get(HOP_HEADER) == instance
