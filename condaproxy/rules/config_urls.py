"""The one rule every http(s) URL written in the configuration meets (channel upstreams,
`allowed_origins`, `server.external_url`, `cluster.peer_url`, `storage.endpoint`). Pure.

Each of them is a base the proxy appends paths to, or an origin it compares: a query or a
fragment would swallow every path appended after it (`https://host/ch?x=1` + `/noarch/...` is
one URL whatever the file), spaces and control characters are sent as part of the path or
the host, and a port or IPv6 literal that does not parse must stop start-up with the key's
name, not with a traceback from deep inside a request.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit, urlunsplit

Shape = Literal["base", "origin"]  # base: scheme://host[:port][/path]; origin: no path


def check_http_url(text: str, shape: Shape = "base", userinfo: bool = False) -> str:
    """`text` as a usable http(s) URL (scheme lower-cased, trailing `/` dropped), or a
    ValueError saying what is wrong with it. Userinfo is refused unless `userinfo`."""
    if text != text.strip() or any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in text):
        raise ValueError("holds spaces or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port  # parsed on access: `:abc` and `:99999` raise here
    except ValueError as exc:
        raise ValueError(f"is not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("is not an http(s) URL")
    if port == 0:
        raise ValueError("has port 0")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError("has a query or a fragment (nothing may follow the path)")
    if (parts.username is not None or parts.password is not None) and not userinfo:
        raise ValueError("holds a user name or password (not allowed here)")
    path = parts.path.rstrip("/")
    if shape == "origin" and path:
        raise ValueError("is not an origin (scheme://host[:port], no path)")
    return urlunsplit((scheme, parts.netloc, path, "", ""))
