"""How many connections one worker process holds, and which one gives way when there are too
many (the connection table of web/connection.py).

Every connection costs a file descriptor, and a process has a fixed number of them (`ulimit
-n`, often 1024). A client that opens connections and never completes a request head
(slowloris), or keeps idle keep-alive connections open, used them all up: the kernel's accept
queue then filled and every other client was refused, conda clients included, until the
attacker's heads timed out, and it could open them again. The proxy's own files (blobs, temp
files, upstream sockets) failed to open with EMFILE meanwhile.

So each worker:
- raises its soft descriptor limit to the hard one at start (as nginx's
  `worker_rlimit_nofile` or Go's runtime do): the soft 1024 is a legacy of `select()`;
- admits at most half of that limit as client connections (the other half is for the files
  and upstream sockets its requests open);
- when full, closes the connection that has waited longest for a request head, as nginx
  reuses its idle connections: first among those that never completed a request (a head
  still arriving, or nothing sent: what a flood is made of), then among idle keep-alive
  connections that did (a client's pool, whose next request would race the close). A
  client with a request under way is never cut for a newcomer, and a slowloris cannot hold
  the door shut. Only when every connection has a request under way is the newcomer
  answered 503 (with Retry-After) and closed.
"""

from __future__ import annotations

import resource
from typing import Protocol

# Descriptors kept out of the connection budget however small the limit: the process's own
# (~40: logs, index, metrics), and a burst of connections the event loop accepts in one go
# before any of them is seen here (asyncio takes up to 100 at a time).
_RESERVED = 256
_CEILING = 1 << 20  # a hard limit of "unlimited" is not a number to size anything by


class Member(Protocol):
    def shed(self) -> None:
        """Close this connection to make room (it is waiting for a request head)."""


def raise_descriptor_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; the soft limit now."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = _CEILING if hard == resource.RLIM_INFINITY else min(hard, _CEILING)
        if soft == resource.RLIM_INFINITY or soft >= wanted:
            return min(soft, _CEILING) if soft != resource.RLIM_INFINITY else _CEILING
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        return wanted
    except (OSError, ValueError):  # not allowed here: keep what there is
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return _CEILING if soft == resource.RLIM_INFINITY else soft


def connection_budget(descriptors: int) -> int:
    """Client connections one process admits with `descriptors` file descriptors."""
    return max(16, min(descriptors // 2, descriptors - _RESERVED))


class Occupancy:
    """The open connections of this process; those waiting for a request head in the order
    they began to wait (a dict keeps insertion order): `waiting` never completed a request,
    `idle` did (keep-alive)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.members: set[Member] = set()
        self.waiting: dict[Member, None] = {}
        self.idle: dict[Member, None] = {}

    def admit(self, member: Member) -> bool:
        """Room for `member`, shedding the longest-waiting connection if need be (one that
        never completed a request first); False when every connection has a request under
        way."""
        if len(self.members) >= self.limit:
            oldest = next(iter(self.waiting), None) or next(iter(self.idle), None)
            if oldest is None:
                return False
            self.leave(oldest)
            oldest.shed()
        self.members.add(member)
        return True

    def wait(self, member: Member, answered: bool = False) -> None:
        """`member` now waits for a request head; `answered`: it completed one before."""
        if member in self.members:
            self.busy(member)
            (self.idle if answered else self.waiting)[member] = None

    def busy(self, member: Member) -> None:
        """`member`'s head is complete: a request is under way."""
        self.waiting.pop(member, None)
        self.idle.pop(member, None)

    def leave(self, member: Member) -> None:
        self.members.discard(member)
        self.busy(member)


_occupancy: Occupancy | None = None


def occupancy() -> Occupancy:
    """This process's table, sized when the first connection arrives (in the worker)."""
    global _occupancy
    if _occupancy is None:
        _occupancy = Occupancy(connection_budget(raise_descriptor_limit()))
    return _occupancy
