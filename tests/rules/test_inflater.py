"""A compressed transfer undone piece by piece (rules/codecs.Inflater): the same bytes however
the body is cut into pieces, never more than the limit, and a body that ends early refused."""

from __future__ import annotations

import gzip
import os
import zlib

import pytest

from condaproxy.rules.codecs import PIECE, Inflater, TooLarge

DATA = os.urandom(100_000) + bytes(3 * PIECE)  # some of it compresses well


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


FORMS = {"gzip": gzip.compress, "deflate": zlib.compress, "raw deflate": raw_deflate}


def undo(coding: str, body: bytes, size: int, limit: int) -> bytes:
    inflater = Inflater(coding, limit)
    out = bytearray()
    for start in range(0, len(body), size):
        for piece in inflater.feed(body[start : start + size]):
            assert len(piece) <= PIECE
            out += piece
    inflater.end()
    return bytes(out)


@pytest.mark.parametrize("size", [1, 7, 65536, 1 << 30])
@pytest.mark.parametrize("form", list(FORMS))
def test_every_cut_of_the_body_gives_the_same_bytes(form: str, size: int) -> None:
    coding = "gzip" if form == "gzip" else "deflate"
    body = FORMS[form](DATA)
    if size == 1:
        body = FORMS[form](DATA[:5000])
        assert undo(coding, body, size, len(DATA)) == DATA[:5000]
    else:
        assert undo(coding, body, size, len(DATA)) == DATA


def test_no_more_than_the_limit_is_produced() -> None:
    bomb = gzip.compress(bytes(64 << 20))  # 64 KiB that claims 64 MiB
    inflater = Inflater("gzip", 1 << 20)
    produced = 0
    with pytest.raises(TooLarge):
        for piece in inflater.feed(bomb):
            produced += len(piece)
    assert produced <= 1 << 20


@pytest.mark.parametrize("body", [b"", gzip.compress(DATA)[:-9], b"not gzip at all"])
def test_a_body_that_is_not_whole_gzip_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        undo("gzip", body, 1 << 20, len(DATA))


def test_a_coding_that_cannot_be_undone_in_pieces_is_refused() -> None:
    for coding in ("br", "zstd", "compress", ""):
        with pytest.raises(ValueError, match="not supported"):
            Inflater(coding, 1)
