"""Pure rule: a request must never go round a cycle of upstreams. An upstream URL that points
back at the proxy (`http://localhost:8080/conda-forge` copied from a client's config, two
channels whose upstreams point at each other through it, two proxies pointing at each other)
used to hold every client for the upstream read timeout, then answer a 504 that named no cause.

A channel whose upstream is ANOTHER channel of the same proxy, or of another condaproxy, is
no cycle (`team` over `http://<proxy>/cf` layers uploads or a policy over `cf`) and is served.
So every upstream request carries HOPS_HEADER: the chain of hops the request has passed, each
an opaque token of one (proxy, channel) — a short keyed hash of the proxy's random secret and
the channel name, so neither a local channel name nor anything stable about the proxy reaches
a third-party upstream. A proxy forwards the chain it received and appends its own hop; a
channel request is refused (508) when its own hop is already in the chain (a cycle, here or
through other proxies), or when the chain is longer than MAX_HOPS (bounded: the header is
hostile input). The sender turns the 508 into a 502 naming the loop. No I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

from .errors import ProxyError, UpstreamError

# Set by a `serve` for its workers; not CONDAPROXY_*, which names config overrides.
INSTANCE_SECRET_ENV = "_CONDAPROXY_INSTANCE_SECRET"
HOPS_HEADER = "x-condaproxy-hops"
LOOP_HEADER = "x-condaproxy-loop"  # on a 508: a condaproxy refused a cycle (not a WebDAV 508)
MAX_HOPS = 16
TOKEN_CHARS = 16  # 64 bits of a keyed hash: opaque, and no two hops collide by chance
MAX_HEADER_CHARS = 2 * MAX_HOPS * (TOKEN_CHARS + 2)  # room for whitespace; beyond: refused
_TOKEN = re.compile(rf"[0-9a-f]{{{TOKEN_CHARS}}}")

Chain = tuple[str, ...]


def hop(secret: str, channel: str) -> str:
    """The opaque token of one (proxy, channel): nothing of either can be read back from it."""
    mac = hmac.new(secret.encode(), channel.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return mac.hexdigest()[:TOKEN_CHARS]


class LoopDetected(ProxyError):
    """508: this channel is already on the request's chain of hops (a cycle), or the chain is
    longer than any layering of channels needs."""

    status = 508
    headers = {LOOP_HEADER: "1"}  # noqa: RUF012 - per-class response headers, never mutated


class UpstreamLoop(UpstreamError):
    """502 to a client: the channel's upstream leads back round a cycle. Answered as a 508 to
    a proxy that sent the request (it has a chain), so each proxy back to the client names the
    loop rather than "upstream answered 502"."""


def parse_chain(value: str | None) -> Chain:
    """The hops an incoming request has passed. Raises LoopDetected for a chain too long (its
    length is checked before anything is split); tokens that are not ours to read (garbage, a
    client's invention) are dropped, so they are never forwarded upstream."""
    if not value:
        return ()
    if len(value) > MAX_HEADER_CHARS:
        raise LoopDetected(
            f"the request's {HOPS_HEADER} header is longer than {MAX_HEADER_CHARS} characters"
            f" (more than {MAX_HOPS} hops): refused as a loop"
        )
    chain = tuple(t for t in (p.strip().lower() for p in value.split(",")) if _TOKEN.fullmatch(t))
    if len(chain) > MAX_HOPS:
        raise LoopDetected(
            f"the request has passed {len(chain)} proxy hops (at most {MAX_HOPS}): refused as"
            " a loop"
        )
    return chain


def check_hop(chain: Chain, own: str, channel: str) -> None:
    """Refuse a request that reaches a channel already on its chain: it went round a cycle."""
    if own in chain:
        raise LoopDetected(
            f"this request already passed channel {channel!r} of this proxy: an upstream leads "
            f"back to it (a loop; check the upstream of {channel!r} and of the channels it "
            "reaches)"
        )


def extended(chain: Chain, own: str) -> Chain:
    """The chain sent upstream: the incoming one and this hop (once)."""
    return chain if own in chain else (*chain, own)


def format_chain(chain: Chain) -> str:
    return ",".join(chain)


def refused_loop(status: int, headers: Mapping[str, str]) -> bool:
    """Whether an upstream's answer is a condaproxy refusing a cycle (lowercase names)."""
    return status == 508 and LOOP_HEADER in headers
