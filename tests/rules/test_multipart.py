"""The multipart boundary grammar (rules/multipart.py, RFC 2046 §5.1.1)."""

from __future__ import annotations

import pytest

from condaproxy.rules.multipart import valid_boundary


@pytest.mark.parametrize(
    "boundary", [b"a", b"a" * 70, b"----WebKitFormBoundary7MA4YWxkTrZu0gW", b"a b", b"'()+_,-./:=?"]
)
def test_boundaries_rfc_2046_allows(boundary):
    assert valid_boundary(boundary)


@pytest.mark.parametrize(
    "boundary", [None, b"", b"a" * 71, b"a" * 5000, b"a ", b'a"b', b"a\x00b", b"\xc3\xa9", b"<a>"]
)
def test_boundaries_it_does_not(boundary):
    assert not valid_boundary(boundary)
