"""The boundary of a multipart/form-data upload (RFC 2046 §5.1.1, RFC 7578 §4.1). No I/O.

A boundary is 1 to 70 characters of a small set (letters, digits and `'()+_,-./:=?` and
space, not last). python-multipart refuses one past 256 bytes with an exception that is none
of its parse errors, which reached the client as a 500 "internal error"; here any boundary
outside the grammar is the 400 of a body that is not multipart/form-data with a boundary."""

from __future__ import annotations

import re

MAX_BOUNDARY = 70
_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]\Z")


def valid_boundary(boundary: bytes | None) -> bool:
    """Whether `boundary` is one RFC 2046 allows (a sender's quotes already removed)."""
    return boundary is not None and _BOUNDARY.match(boundary) is not None
