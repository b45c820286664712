"""An upstream that answers a plain GET (no Range, no validators) with a status that is not the
whole file: 206 Partial Content (a part), 304 Not Modified, 204 No Content or 205 (nothing),
another 2xx. For a file no record lists, nothing checks the bytes: the proxy streamed the part,
or nothing, as a complete 200, and a client took a truncated (or empty) file as the whole. Only
a 200 (or 203) is the file; anything else is the upstream's error, a 502 naming it, for every
kind of file, and nothing of it is kept. A 304 to the proxy's own revalidation still freshens.

Real processes: the test upstream and `condaproxy serve`."""

from __future__ import annotations

import json
import os

import msgpack
import pytest
import zstandard

from tests.support.hostile import ZST, get_one
from tests.support.hostile import HostileSetup as Setup

pytestmark = pytest.mark.integration

PKG = "linux-64/small-1.0-0.conda"
UNLISTED = "linux-64/gone-1.0-0.conda"  # a removed build, a lockfile's URL: no record names it
DATA = os.urandom(4096)
SHARDS = zstandard.ZstdCompressor().compress(
    msgpack.packb(
        {
            "info": {"subdir": "linux-64", "base_url": "./", "shards_base_url": "./shards/"},
            "shards": {},
        }
    )
)
# path -> what a whole answer holds
FILES = {
    UNLISTED: DATA,
    PKG: DATA,
    "linux-64/repodata.json": json.dumps(
        {"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": {}}
    ).encode(),
    "linux-64/repodata_shards.msgpack.zst": SHARDS,
    "channeldata.json": b'{"packages": {}}',
}
STATUSES = [206, 304, 204, 205, 226, 299]


setup = Setup.fixture("partial", {PKG: DATA}, {UNLISTED: DATA}, missing=ZST)


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("path", list(FILES))
def test_an_answer_that_is_not_the_whole_file_is_a_502(
    setup: Setup, path: str, status: int
) -> None:
    setup.fresh()
    if path.endswith(".conda"):  # its record first, so only the package meets the answer
        assert setup.client.get(f"{setup.proxy.url}/ch/linux-64/repodata.json").status_code == 200
    whole = FILES[path]
    part = whole[: len(whole) // 2] if status == 206 else b""
    headers = {"content-range": f"bytes 0-{len(part) - 1}/{len(whole)}"} if status == 206 else {}
    setup.upstream.override(f"/{path}", part, status, headers=headers)
    got = get_one(f"{setup.proxy.url}/ch/{path}", {"accept-encoding": "identity"})
    expected = 404 if path.endswith(".msgpack.zst") else 502  # no shard index: clients fall back
    assert got.status == expected, got.body[:300]
    assert setup.upstream.url in json.loads(got.body)["error"]
    setup.upstream.reset()
    setup.upstream.override("/linux-64/repodata.json.zst", b"", 404)
    setup.upstream.override(f"/{path}", whole)
    again = get_one(f"{setup.proxy.url}/ch/{path}", {"accept-encoding": "identity"})
    assert again.status == 200 and again.body == whole, "the partial answer was kept"
