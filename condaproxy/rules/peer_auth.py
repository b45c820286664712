"""Pure rules: how one replica proves to another that it holds the shared peer token, without
sending it. No I/O.

The address a replica streams a download from is read from Redis (the lease's value), so it is
only as trustworthy as everyone who can write to Redis. A Bearer token sent there would hand the
peer token (read access to every channel) to whoever wrote the address. Instead the request
carries `X-Condaproxy-Peer: <expires>.<hmac>`, an HMAC-SHA256 under the token of the one file's
key and a time at most `VALID_FOR` seconds ahead: a captured header reads that one file, for
about a minute. The replica that answers recomputes it with its own copy of the token and
compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "x-condaproxy-peer"
VALID_FOR = 60  # seconds a signature is good for
SKEW = 30  # seconds the replicas' clocks may disagree by


def _mac(token: str, key: str, expires: int) -> str:
    message = f"GET {key} {expires}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def sign(token: str, key: str, now: float) -> str:
    """The header value that lets its bearer read the file `key` (a channel path) until
    `now + VALID_FOR`."""
    expires = int(now) + VALID_FOR
    return f"{expires}.{_mac(token, key, expires)}"


def verify(value: str, token: str, key: str, now: float) -> bool:
    """True if `value` was made by `sign` with `token` for `key`, and has not expired."""
    expires_text, _, mac = value.strip().partition(".")
    if not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 12:
        return False
    expires = int(expires_text)
    if not now - SKEW <= expires <= now + VALID_FOR + SKEW:
        return False
    return hmac.compare_digest(mac.encode(), _mac(token, key, expires).encode())
