"""What a client is told when its request is no HTTP/1.1 the parser can read (a NUL or raw
space in the path, a header name with a space, a method that is no token, two
Content-Lengths, a TLS handshake sent in clear). The answer is the proxy's JSON 400, as for
any other bad input, never the server's bare text. No I/O.

The parser's reasons are its own fixed phrases ("Invalid header value char", "Duplicate
Content-Length"), which quote nothing the client sent; a failure inside one of the
server's callbacks is not the client's to read, so it gets a plain phrase. Either way the
message is printable ASCII and short: a request that could not be read leaves nothing of
itself in the answer or the log."""

from __future__ import annotations

import re

# A callback of the server failed on what the parser read: its exception says nothing useful.
CALLBACK_FAILED = "the request line or a header field could not be read"
_MAX_REASON = 120
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def malformed_request(reason: str | None, from_callback: bool = False) -> str:
    """The error message of the 400 for a request the HTTP parser refused."""
    text = CALLBACK_FAILED if from_callback or not reason else reason
    text = _UNPRINTABLE.sub("?", text).strip()[:_MAX_REASON] or CALLBACK_FAILED
    return f"malformed HTTP/1.1 request: {text}"
