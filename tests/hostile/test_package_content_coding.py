"""An upstream that compresses a package although the proxy asked for `identity` (a server with
`gzip` on every type, an object stored with Content-Encoding metadata). conda's requests and
rattler's reqwest undo the coding and check the package's own checksum, so a client asking the
upstream directly gets its package: through the proxy it must too, verified against the record,
and kept. A coding that decodes to other bytes, more bytes than listed (a bomb), is cut short or
is not one the proxy can undo is a 502 naming the upstream, and nothing of it is kept.

Real processes: the test upstream and `condaproxy serve` (its production HTTP client)."""

from __future__ import annotations

import gzip
import json
import os
import zlib

import pytest

from tests.support.hostile import HostileSetup as Setup
from tests.support.hostile import get_one

pytestmark = pytest.mark.integration

SMALL = "linux-64/small-1.0-0.conda"  # gathered in memory (≤ 1 MiB)
BIG = "linux-64/big-1.0-0.conda"  # through a temp file
FILES = {SMALL: os.urandom(300 << 10), BIG: os.urandom(3 << 20)}


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


CODINGS = {
    "gzip": ("gzip", gzip.compress),
    "x-gzip": ("x-gzip", gzip.compress),
    "deflate (zlib)": ("deflate", zlib.compress),
    "deflate (raw)": ("deflate", raw_deflate),
    "GZIP, spaced": (" GZIP ", gzip.compress),
    "bytes after the end": ("gzip", lambda data: gzip.compress(data) + b"\x00" * 64),
}


setup = Setup.fixture("coding", FILES, {})


@pytest.mark.parametrize("path", [SMALL, BIG])
@pytest.mark.parametrize("case", list(CODINGS))
def test_a_compressed_transfer_of_a_package_is_undone_verified_and_kept(
    setup: Setup, path: str, case: str
) -> None:
    setup.fresh()
    coding, compress = CODINGS[case]
    setup.upstream.override(f"/{path}", compress(FILES[path]), headers={"content-encoding": coding})
    first = setup.client.get(f"{setup.proxy.url}/ch/{path}")
    assert first.status_code == 200, first.text
    assert "content-encoding" not in first.headers
    assert first.content == FILES[path]
    assert int(first.headers["content-length"]) == len(FILES[path])
    again = setup.client.get(f"{setup.proxy.url}/ch/{path}")
    assert again.headers["x-cache"] in ("HIT", "COALESCED") and again.content == FILES[path]
    assert setup.upstream.count("GET", f"/{path}") == 1


def hostile(path: str) -> dict[str, tuple[bytes, str]]:
    data = FILES[path]
    return {
        "other bytes": (gzip.compress(os.urandom(len(data))), "gzip"),
        "a bomb": (gzip.compress(bytes(len(data) * 50)), "gzip"),
        "one byte too many": (gzip.compress(data + b"x"), "gzip"),
        "cut short": (gzip.compress(data)[: len(data) // 2], "gzip"),
        "not gzip": (data, "gzip"),
        "brotli": (data, "br"),
        "unknown coding": (data, "snappy"),
    }


@pytest.mark.parametrize("path", [SMALL, BIG])
@pytest.mark.parametrize("case", list(hostile(SMALL)))
def test_a_compressed_transfer_that_is_not_the_package_is_refused(
    setup: Setup, path: str, case: str
) -> None:
    setup.fresh()
    body, coding = hostile(path)[case]
    setup.upstream.override(f"/{path}", body, headers={"content-encoding": coding})
    got = get_one(f"{setup.proxy.url}/ch/{path}")
    if coding in ("br", "snappy"):  # known from the headers: a clean 502
        assert got.status == 502, got.body
        error = json.loads(got.body)
        assert error["upstream"] == f"{setup.upstream.url}/{path}"
        assert repr(coding) in error["error"]
    else:  # refused once decoded: a 502, or headers already out and the transfer cut
        assert got.status == 502 or (got.status == 200 and not got.complete), got
        assert got.body != FILES[path]
    setup.upstream.reset()
    clean = setup.client.get(f"{setup.proxy.url}/ch/{path}")
    assert clean.status_code == 200 and clean.content == FILES[path]
    assert clean.headers["x-cache"] == "MISS"  # nothing of the refused body was kept
