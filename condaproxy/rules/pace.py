"""Pure rule: is an upstream body still arriving, or only pretending to? No I/O.

A read timeout bounds the wait for each piece of a body, not the body: an upstream that sends
one byte every few seconds, each just inside `read_timeout`, never times out. For a package
that only ties up a download, but metadata is answered once its whole body is in, so every
client of that subdir waits on it, stale copy in hand, for as long as the upstream likes. So a
body must also keep a minimum pace, as Apache's mod_reqtimeout asks of request bodies
(MinRate): on average at least MIN_RATE bytes a second over each `read_timeout`. Any real link
is thousands of times faster; a trickle is refused within about two read timeouts.
"""

from __future__ import annotations

MIN_RATE = 512  # bytes per second, averaged over each window of read_timeout


class Pace:
    """Counts a body's bytes per window of `window` seconds (the read timeout)."""

    def __init__(self, window: float, now: float, min_rate: int = MIN_RATE) -> None:
        self.window, self.min_rate = window, min_rate
        self.started, self.received = now, 0

    def too_slow(self, size: int, now: float) -> bool:
        """Count a piece of `size` bytes that arrived at `now`: True once a whole window has
        passed with fewer than `min_rate` bytes a second on average."""
        self.received += size
        elapsed = now - self.started
        if elapsed < self.window:
            return False
        if self.received < self.min_rate * elapsed:
            return True
        self.started, self.received = now, 0
        return False


def head_deadline(connect_timeout: float, read_timeout: float) -> float:
    """Seconds from sending a request by which its whole answer head must be in: the status
    line and header fields, and any interim 1xx answers before them. The read timeout bounds
    each wait for bytes, not the head: aiohttp stops its read timer once an interim answer
    (`100 Continue`, `103 Early Hints`) is parsed, and a head sent a byte at a time restarts
    it with every byte, so such an upstream held the request, and every client joined to it
    (a download, a revalidation), for as long as it kept the connection open; the client
    got no 504 at all. A connection takes at most `connect_timeout`, and a real upstream's
    head follows within `read_timeout`."""
    return connect_timeout + read_timeout
