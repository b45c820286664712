"""What the engine answers, before it is HTTP: a body the proxy holds (`Stored`) or one that
arrives while it is sent (`Streamed`). web/responses.py turns either into status, headers and
bytes (conditionals, ranges, HEAD); the engine never builds a response itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .tails import Body
from .transfer import Head

IMMUTABLE = "public, max-age=31536000, immutable"
# A file no record lists is streamed through unverified and never kept (transfer.Expected):
# no cache in front may keep it either, let alone for a year as immutable.
UNLISTED = "no-store"
STALE_WARNING = '110 - "Response is Stale"'


@dataclass(frozen=True)
class Asked:
    """What the client sent that shapes the answer: its headers (conditionals, ranges,
    X-Expected-Sha256) and the method."""

    headers: Mapping[str, str]
    method: str = "GET"


@dataclass
class Stored:
    """A body on disk: a cached or uploaded file, or a metadata variant. `fd` is a descriptor
    already open (a hit, checked to exist); otherwise `opener` opens one when a body is sent.
    `on_close` runs once the body has been sent (eviction keeps the blob meanwhile)."""

    size: int
    content_type: str
    etag: str | None
    modified: float | None
    cache_control: str
    outcome: str  # hit | miss | revalidated | stale | coalesced
    headers: dict[str, str] = field(default_factory=dict)
    fd: int | None = None
    opener: Callable[[], int] | None = None
    on_open: Callable[[], None] | None = None
    on_close: Callable[[], None] | None = None

    def open(self) -> int:
        if self.fd is not None:
            return self.fd
        assert self.opener is not None
        return self.opener()


@dataclass
class Streamed:
    """A miss: headers from what is known before the body (`head`), bytes from `body` (None
    for a HEAD answered from the record). Ranges only where the body can serve them."""

    head: Head
    body: Body | None
    outcome: str  # miss | coalesced
    cache_control: str = IMMUTABLE


Result = Stored | Streamed
