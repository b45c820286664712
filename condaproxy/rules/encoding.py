"""Pure rules of content negotiation for repodata.json (RFC 9110 §12.5.3, §8.4): which stored
coding of the same document a client accepts. No I/O.

A client that accepts `zstd` gets the snapshot's .zst bytes as `Content-Encoding: zstd` (no
work at all); one that accepts `gzip` gets the gzip variant made once per snapshot; anyone else
the identity document. Each coding is its own representation: its own ETag, and every answer
says `Vary: Accept-Encoding`.

The pages (status, browse) answer JSON or HTML by `Accept` (`prefers_json`), read the same way.
"""

from __future__ import annotations

PREFERENCE = ("zstd", "gzip")  # cheapest for us first


def accepted(header: str | None) -> dict[str, float]:
    """Codings in an Accept-Encoding header with their q-values (`*` included)."""
    found: dict[str, float] = {}
    for item in (header or "").split(","):
        name, *params = (part.strip() for part in item.split(";"))
        if not name:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        found[name.lower()] = q
    return found


def choose(header: str | None, available: set[str]) -> str | None:
    """The coding to send among `available` (None: identity): the one the client ranks
    highest (q-value), ties broken by what costs us least; identity when the client ranks it
    above every coding it accepts."""
    codings = accepted(header)

    def q(coding: str) -> float:
        return codings[coding] if coding in codings else codings.get("*", 0.0)

    usable = [coding for coding in PREFERENCE if coding in available and q(coding) > 0]
    best = max(usable, key=q, default=None)  # the first of equals: PREFERENCE order
    if best is None or codings.get("identity", 0.0) > q(best):
        return None
    return best


def prefers_json(header: str | None) -> bool:
    """Whether an Accept header asks for JSON rather than HTML: `application/json` named
    (media types ignore case), with a q-value above 0 and above text/html's (named, else
    through `text/*` or `*/*`); on a tie, JSON unless text/html is named too (a browser's
    `*/*;q=0.8` is HTML, axios' `application/json, text/plain, */*` JSON). A substring test
    answered JSON to `application/json;q=0` and HTML to `APPLICATION/JSON` or
    `text/html;q=0.5, application/json`."""
    ranges = accepted(header)
    json_q = ranges.get("application/json", 0.0)
    if not json_q > 0:
        return False
    named = "text/html" in ranges
    html_q = ranges["text/html"] if named else ranges.get("text/*", ranges.get("*/*", 0.0))
    return json_q > html_q or (json_q == html_q and not named)
