"""Pure rules: how a raw request path becomes segments the proxy may act on. No I/O.

One rule for every route (channel files, the upload API, the cache API):

- The RAW path (ASGI `raw_path`, still percent-encoded) is split on `/` first, then each
  segment is percent-decoded exactly once (RFC 3986 section 2.1; an escape that is not `%` and
  two hex digits is a 400). An encoded slash (`%2F`) is therefore never a separator.
- A decoded segment must be printable ASCII (0x21-0x7e) without `%`, `/`, `\\`, `?` or `#`, and
  must not be empty, `.` or `..` (RFC 3986 section 5.2.4 dot segments). A `%` left after the
  one decoding means the client encoded twice (`%252e%252e`): an upstream that decodes again
  would resolve what we never checked, so it is refused, not decoded again.
- Limits: a raw path over `MAX_PATH` bytes, or a decoded segment over `MAX_SEGMENT` bytes (the
  usual file-name limit), is 414 URI Too Long, answered before any upstream contact.

Violations are `BadRequest` (400) naming the segment; a segment that follows a `t` segment may
be an anaconda.org style path token and is never echoed.

The proxy's own routes own their first path segment (`RESERVED_SEGMENTS`); channel names may
not start with one (`valid_channel_name`), so routing by first segment is exact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from .errors import BadRequest, URITooLong

MAX_PATH = 1024  # raw bytes, before decoding
MAX_SEGMENT = 255  # decoded bytes: NAME_MAX of common file systems

# First path segments served by the proxy itself (health, readiness, metrics, the API, and room
# for a status page with its schema and static files). The root `/` belongs to the proxy too.
ROUTE_SEGMENTS = frozenset({"healthz", "readyz", "metrics", "api", "openapi.json", "static"})
# `t` opens an anaconda.org style `/t/<token>/` path: no channel may be named like that either.
TOKEN_SEGMENT = "t"
RESERVED_SEGMENTS = ROUTE_SEGMENTS | {TOKEN_SEGMENT}

# Printable ASCII except space, `#` (0x23), `%` (0x25), `/` (0x2f), `?` (0x3f) and `\` (0x5c).
_CLEAN = re.compile(r"[\x21\x22\x24\x26-\x2e\x30-\x3e\x40-\x5b\x5d-\x7e]+")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
# Path tokens: URL-safe characters only (RFC 3986 unreserved, plus `+` and `=` of base64).
TOKEN_RE = re.compile(r"[A-Za-z0-9._~+=-]+")
# One segment of a channel name (anaconda.org names are lower case, dashes and underscores).
CHANNEL_SEGMENT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


def split_raw_path(raw: bytes) -> list[str]:
    """The decoded segments of a raw request path; `/` is `[]`. Raises BadRequest/URITooLong."""
    if len(raw) > MAX_PATH:
        raise URITooLong(f"request path is {len(raw)} bytes; at most {MAX_PATH} are accepted")
    if not raw.startswith(b"/"):
        raise BadRequest("request path must start with '/'")
    if raw == b"/":
        return []
    segments: list[str] = []
    for part in raw[1:].split(b"/"):
        # The segment after a `t` may be a path token: never echo it.
        masked = bool(segments) and segments[-1] == TOKEN_SEGMENT
        segments.append(decode_segment(part, masked=masked))
    return segments


def raw_path_of(scope: Mapping[str, Any]) -> bytes:
    """The still-encoded path of an ASGI request. A server without `raw_path` gave the path
    decoded once: encode it again so that decoding it once more yields exactly that path."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw
    return quote(str(scope["path"]), safe="/").encode("ascii")


def decode_segment(raw: bytes, *, masked: bool = False) -> str:
    """Percent-decode one raw segment exactly once, then check it (module docstring)."""
    sent = raw.decode("latin-1")  # request targets are ASCII; latin-1 cannot fail
    if b"%" not in raw:
        return check_segment(sent, masked=masked)
    if _BAD_ESCAPE.search(raw):
        raise _refused(sent, masked, "holds a '%' that is not a %XX escape")
    decoded = _ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), raw).decode("latin-1")
    return check_segment(decoded, masked=masked, sent=sent)


def check_segment(text: str, *, masked: bool = False, sent: str | None = None) -> str:
    """Check one decoded segment; `sent` is its form on the wire, for the message."""
    if len(text) > MAX_SEGMENT:
        shown = "a path segment" if masked else f"path segment '{_show(sent or text)[:40]}...'"
        raise URITooLong(f"{shown} is {len(text)} bytes; at most {MAX_SEGMENT} are accepted")
    if not _CLEAN.fullmatch(text) or text in (".", ".."):
        raise _refused(sent if sent is not None else text, masked, _reason(text))
    return text


def check_token(token: str) -> str:
    """A `/t/<token>/` segment: URL-safe characters only. The token is never echoed."""
    if not TOKEN_RE.fullmatch(token):
        raise BadRequest("the /t/<token>/ path token holds characters a token may not contain")
    return token


def split_token(segments: Sequence[str]) -> tuple[str | None, list[str]]:
    """Strip a leading anaconda.org style `/t/<token>/`: rattler puts it first, conda after the
    channel alias (here the proxy root), so both land at the start. The token is checked."""
    if len(segments) >= 3 and segments[0] == TOKEN_SEGMENT:
        return check_token(segments[1]), list(segments[2:])
    return None, list(segments)


def is_own_route(segments: Sequence[str]) -> bool:
    """True when the proxy itself answers this path (after any `/t/<token>/`): the root, or a
    first segment that equals a reserved name exactly (`healthz-mirror` is a channel)."""
    return not segments or segments[0] in ROUTE_SEGMENTS


def page_target(raw: bytes) -> tuple[str | None, list[str]] | None:
    """A page of the proxy's own (web/pages.py): the root `/`, `/t/<token>/`, and any path
    that ends in `/` below a channel (`/<channel>/`, `/<channel>/<subdir>/`). Returns the path
    token and the checked segments before the final slash; None for a file path, and for a
    trailing slash under the proxy's routes (`/api/...`), which keep their own rules. Channel
    files never end in `/`, so no conda client request is taken for a page."""
    if not raw.endswith(b"/"):
        return None
    # `//` at the end is an empty segment: split as sent, so it is refused like any other.
    segments = split_raw_path(raw if raw.endswith(b"//") else raw[:-1] or b"/")
    if len(segments) == 2 and segments[0] == TOKEN_SEGMENT:
        return check_token(segments[1]), []
    token, rest = split_token(segments)
    if rest and is_own_route(rest):
        return None
    return token, rest


def valid_channel_name(name: str) -> bool:
    """A usable channel name: `/`-separated segments of `[A-Za-z0-9_][A-Za-z0-9_.+-]*`, none
    of them `t` (the path-token marker), the first not a reserved route, at most MAX_SEGMENT."""
    if not name or len(name) > MAX_SEGMENT:
        return False
    segments = name.split("/")
    return (
        segments[0] not in RESERVED_SEGMENTS
        and TOKEN_SEGMENT not in segments
        and all(CHANNEL_SEGMENT_RE.fullmatch(s) for s in segments)
    )


def _reason(text: str) -> str:
    if text == "":
        return "is empty (a '//' in the path)"
    if text in (".", ".."):
        return "is a relative path step"
    if "/" in text or "\\" in text:
        return "holds an encoded path separator"
    if "%" in text:
        return "is percent-encoded more than once"
    if any(c in text for c in "?#"):
        return "holds an encoded '?' or '#'"
    return "holds a control, space or non-ASCII character"


def _refused(raw_text: str, masked: bool, reason: str) -> BadRequest:
    # The wording "contains a path step or forbidden character" is shared by every refusal.
    shown = "a path segment" if masked else f"path segment '{_show(raw_text)}'"
    return BadRequest(f"{shown} contains a path step or forbidden character: it {reason}")


def _show(text: str) -> str:
    """Printable form of what the client sent (it may hold control characters)."""
    return text.encode("unicode_escape").decode("ascii")
