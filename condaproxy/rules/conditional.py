"""Pure HTTP caching rules (RFC 9110/9111): freshness, validators, conditional requests. No I/O."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from .numbers import decimal


def is_fresh(fetched_at: float, ttl: float, now: float) -> bool:
    """RFC 9111 §4.2: fresh while age < freshness lifetime. ttl 0 means revalidate every time."""
    return ttl > 0 and 0 <= now - fetched_at < ttl


def remaining_max_age(fetched_at: float, ttl: float, now: float) -> int:
    """What is left of the ttl, for `Cache-Control: max-age` towards clients."""
    return max(0, int(ttl - max(0.0, now - fetched_at)))


def for_audience(cache_control: str, private: bool) -> str:
    """The Cache-Control a channel file is sent with. A private channel's files answer only to
    a read token, so a shared cache (Varnish, a CDN, a corporate proxy) must never keep one
    for other callers: `public` would let it store even an answer to a request that carried
    Authorization (RFC 9111 §3.5), and a token sent as `X-API-Key` or in a `/t/<token>/`
    path is not a request field a shared cache knows to hold back. So `public` becomes
    `private` (RFC 9111 §5.2.2.7), the other directives (max-age, immutable) kept: the
    caller's own cache still reuses the answer as before. Public channels are unchanged."""
    if not private:
        return cache_control
    kept = [d.strip() for d in cache_control.split(",") if d.strip()]
    others = [d for d in kept if d.lower() not in ("public", "private")]
    return ", ".join(["private", *others])


def strong_etag(opaque: str) -> str:
    return f'"{opaque}"'


def _etag_list(header: str) -> list[str]:
    return [t.strip() for t in header.split(",") if t.strip()]


def if_none_match_hits(header: str | None, etag: str | None) -> bool:
    """RFC 9110 §13.1.2: weak comparison; `*` matches any current representation."""
    if not header or not etag:
        return False
    tags = _etag_list(header)
    if "*" in tags:
        return True
    bare = etag.removeprefix("W/")
    return any(t.removeprefix("W/") == bare for t in tags)


def not_modified(
    if_none_match: str | None,
    if_modified_since: str | None,
    etag: str | None,
    modified: float | None,
) -> bool:
    """Whether a GET/HEAD gets 304. RFC 9110 §13.2.2: If-None-Match, when present, wins over
    If-Modified-Since."""
    if if_none_match:
        return if_none_match_hits(if_none_match, etag)
    if if_modified_since and modified is not None:
        since = parse_http_date(if_modified_since)
        return since is not None and int(modified) <= since
    return False


def if_range_allows(header: str | None, etag: str | None, modified: float | None) -> bool:
    """RFC 9110 §13.1.5: a Range applies only if If-Range matches strongly (ETag) or exactly
    (date); otherwise the whole representation is sent."""
    if not header:
        return True
    header = header.strip()
    if header.startswith(('"', "W/")):
        return etag is not None and not header.startswith("W/") and header == etag
    since = parse_http_date(header)
    return since is not None and modified is not None and since == int(modified)


# A Retry-After passed on is capped: an upstream's "come back tomorrow" should not park clients.
MAX_RETRY_AFTER = 3600


def retry_after_seconds(value: str | None, now: float) -> int | None:
    """RFC 9110 §10.2.3: `Retry-After` is delay-seconds or an HTTP-date; the delay it asks
    for, capped at MAX_RETRY_AFTER, or None when absent or unreadable. Whatever an upstream
    sends here, the answer is a number of seconds or None, never an exception."""
    if not value:
        return None
    value = value.strip()
    seconds = decimal(value)
    if seconds is not None:
        return min(seconds, MAX_RETRY_AFTER)
    when = parse_http_date(value)
    if when is None:
        return None
    return min(max(0, int(when - now)), MAX_RETRY_AFTER)


def parse_http_date(value: str) -> int | None:
    """An HTTP-date's timestamp, or None for anything else (a peer's or a client's text:
    `+99999999999999999999` as the zone makes the standard library raise OverflowError)."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


@functools.lru_cache(maxsize=4096)
def _http_date(seconds: int) -> str:
    return format_datetime(datetime.fromtimestamp(seconds, UTC), usegmt=True)


def http_date(timestamp: float) -> str:
    return _http_date(int(timestamp))


# RFC 9110 §8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E / obs-text.
# A quoted entity-tag (RFC 9110 §8.8.3), or the bare token sloppy servers send (`ETag: v1`),
# kept so that such an upstream still answers 304: visible ASCII either way, nothing a request
# head cannot carry.
_ENTITY_TAG = re.compile(r'(W/)?"[\x21\x23-\x7e\x80-\xff]*"|[\x21\x23-\x7e]+')
_DATE_TEXT = re.compile(r"[\x20-\x7e]+")
MAX_VALIDATOR = 1024  # characters; real ones are tens


def usable_etag(value: str | None) -> str | None:
    """An upstream's ETag as the proxy keeps it and sends it back in If-None-Match, or None
    when it is no entity-tag. Kept as sent, it went into the next revalidation's request
    head: a control character made the HTTP client refuse to send it, a 500 for every client
    of that subdir, stale copy and all, until the copy was purged."""
    if value is None or len(value) > MAX_VALIDATOR:
        return None
    value = value.strip(" \t")
    return value if _ENTITY_TAG.fullmatch(value) else None


def usable_date(value: str | None) -> str | None:
    """An upstream's Last-Modified as kept and sent back in If-Modified-Since: an HTTP-date in
    visible ASCII, else None (the same hazard as usable_etag)."""
    if value is None or len(value) > MAX_VALIDATOR:
        return None
    value = value.strip(" \t")
    if not _DATE_TEXT.fullmatch(value) or parse_http_date(value) is None:
        return None
    return value


# What a conditional request carries (RFC 9110 §13.1); the proxy sends no Range upstream.
CONDITIONAL = ("if-none-match", "if-modified-since")
WHOLE = frozenset({200, 203})  # a representation, whole (203: transformed by a proxy on the way)


def unusable_status(status: int, sent: Mapping[str, str], revalidating: bool = False) -> str | None:
    """Why an answer of `status` to a request with headers `sent` is not a body to use, or None.
    Only 200 (or 203) carries the whole file; 304 answers only a conditional request (or a
    revalidation of a stored copy that had no validator to send: a server's 304 then still
    says that copy is current, as conda's own HTTP cache takes it), and 204,
    205, 206 and any other 2xx to a plain GET are not the file (a 206's part, served as the
    whole, was a truncated package a client took as complete; a 304's nothing, an empty one)."""
    if status in WHOLE:
        return None
    if status == 304:
        asked = {k.lower() for k in sent}
        conditional = revalidating or any(h in asked for h in CONDITIONAL)
        return None if conditional else "answered 304 to a plain request"
    if 200 <= status < 300:
        return f"HTTP {status} is not the whole file a plain GET asks for"
    return f"HTTP {status}"


def lacks_variant(status: int) -> bool:
    """Whether an upstream's error answer to one format of a document (`repodata.json.zst`)
    says only that this format is not to be had there, so the next format (`repodata.json`)
    is asked before anything fails. Not only 404/410: S3 and GCS buckets without list
    permission answer 403 for a key that does not exist, some servers 401 for any unknown
    path, 400/405 for a suffix they do not know, 501 for what they do not implement (CEP-16
    names 501 as "no such file" for shards). The clients do the same on their own: conda falls
    back from the .zst to .json on any 4xx but 416, rattler and mamba probe the .zst with a HEAD
    and read any failure as "no .zst". Behind the proxy the .zst's refusal must not become a 502
    for `repodata.json` itself, fatal on noarch. Not 408/429 (a timeout, "not now"): the
    upstream is struggling, and asking it at once for another format does not help."""
    return (400 <= status < 500 and status not in (408, 429)) or status == 501
