"""Content-Encoding is a list (RFC 9110 §8.4): `identity, gzip` is gzip, `gzip, gzip` is gzip
applied twice, an empty header is no coding, case and spaces do not matter. A client asking
the upstream directly reads each of these (urllib3 and reqwest decode coding lists); through
the proxy the whole header was taken as one coding name, and repodata answered with any of
them was a 502 (`content coding 'identity, gzip' is not supported`), an empty one too. A list
naming a coding the proxy cannot undo stays a 502 naming it.

Real processes: the test upstream and `condaproxy serve`."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Callable

import httpx
import pytest

from tests.support.hostile import ZST, HostileSetup, get_one

pytestmark = pytest.mark.integration

PKG = "linux-64/small-1.0-0.conda"
DATA = os.urandom(4096)
DOC = json.dumps({"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": {}}).encode()


def same(data: bytes) -> bytes:
    return data


def twice(data: bytes) -> bytes:
    return gzip.compress(gzip.compress(data))


def deflate_then_gzip(data: bytes) -> bytes:
    return gzip.compress(zlib.compress(data))


# Content-Encoding -> how the body is encoded under it
LISTS: dict[str, Callable[[bytes], bytes]] = {
    "identity, gzip": gzip.compress,
    "gzip, identity": gzip.compress,
    "Identity , GZIP": gzip.compress,
    "identity,deflate": zlib.compress,
    "": same,
    " ": same,
    "identity, identity": same,
    ",": same,
}
# Two codings: undone on metadata (decoded whole, bounded, each in turn); a package is
# undone as it streams, one coding at most.
UNDONE_ONLY_FOR_METADATA = {"gzip, gzip": twice, "deflate, gzip": deflate_then_gzip}
REFUSED = {"gzip, br": gzip.compress, "identity, compress": same}


class Setup(HostileSetup):
    def repodata(self, coding: str, encode: Callable[[bytes], bytes]) -> httpx.Response:
        self.fresh()
        headers = {"content-encoding": coding}
        self.upstream.override("/linux-64/repodata.json", encode(DOC), headers=headers)
        url = f"{self.proxy.url}/ch/linux-64/repodata.json"
        return self.client.get(url, headers={"accept-encoding": "identity"})


setup = Setup.fixture("codings", {PKG: DATA}, missing=ZST)


@pytest.mark.parametrize("coding", [*LISTS, *UNDONE_ONLY_FOR_METADATA])
def test_repodata_under_a_coding_list_is_read_as_a_client_reads_it(
    setup: Setup, coding: str
) -> None:
    encode = {**LISTS, **UNDONE_ONLY_FOR_METADATA}[coding]
    r = setup.repodata(coding, encode)
    assert r.status_code == 200, r.text[:300]
    assert r.content == DOC


@pytest.mark.parametrize("coding", list(REFUSED))
def test_repodata_under_a_list_naming_an_unknown_coding_is_a_502(setup: Setup, coding: str) -> None:
    r = setup.repodata(coding, REFUSED[coding])
    assert r.status_code == 502, r.text[:300]
    assert r.json()["upstream"] == f"{setup.upstream.url}/linux-64/repodata.json"


@pytest.mark.parametrize("coding", list(LISTS))
def test_a_package_under_a_coding_list_is_undone_verified_and_kept(
    setup: Setup, coding: str
) -> None:
    setup.fresh()
    assert setup.client.get(f"{setup.proxy.url}/ch/linux-64/repodata.json").status_code == 200
    setup.upstream.override(f"/{PKG}", LISTS[coding](DATA), headers={"content-encoding": coding})
    got = get_one(f"{setup.proxy.url}/ch/{PKG}")
    assert got.status == 200 and got.complete
    assert got.sha256 == hashlib.sha256(DATA).hexdigest()
    setup.upstream.reset()
    again = get_one(f"{setup.proxy.url}/ch/{PKG}")
    assert again.headers.get("x-cache") == "HIT"
    assert setup.upstream.count("GET", f"/{PKG}") == 0
