"""A repodata record whose `size` no file has: 10**30, past 2**64, 2**63, negative, a float, a
string. The proxy took any non-negative integer as the size: a HEAD (answered from the record,
without a download) sent `Content-Length: 1000000000000000000000000000000`, which httpx and
hyper refuse as a protocol error, and a GET compared the upstream's real Content-Length with
it and answered 502, for a file whose sha256 the record lists correctly. Now a size no file
has verifies nothing, like a negative one: the file is checked by its sha256 alone, served and
cached; a plausible size that is wrong still fails the download.

Real processes: the test upstream and `condaproxy serve`."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from tests.support.hostile import ZST, get_one, record
from tests.support.hostile import HostileSetup as Setup

pytestmark = pytest.mark.integration

PKG = "b-1.0-0.conda"
DATA = os.urandom(30_000)
ABSURD = {
    "10**30": 10**30,
    "2**64 + 1": 2**64 + 1,
    "2**63": 2**63,
    "2**53 + 1": 2**53 + 1,
    "negative": -1,
    "hugely negative": -(10**30),
    "a float": float(len(DATA)),
    "a string": str(len(DATA)),
    "true": True,
    "null": None,
}
setup = Setup.fixture("size_lies", {f"linux-64/{PKG}": DATA}, missing=ZST)


def _listed(setup: Setup, size: object) -> None:
    setup.fresh()
    document = {
        "info": {"subdir": "linux-64"},
        "packages": {},
        "packages.conda": {PKG: {**record(PKG, DATA), "size": size}},
    }
    (setup.upstream.directory / "linux-64" / "repodata.json").write_text(json.dumps(document))


@pytest.mark.parametrize("case", list(ABSURD))
def test_a_size_no_file_has_is_no_size(setup: Setup, case: str) -> None:
    _listed(setup, ABSURD[case])
    url = f"{setup.proxy.url}/ch/linux-64/{PKG}"
    try:
        head = setup.client.head(url)
    except httpx.HTTPError as exc:
        pytest.fail(f"{case}: a HEAD no client can read: {exc!r}")
    assert head.status_code == 200, head.text
    length = head.headers.get("content-length")
    assert length is None or int(length) == len(DATA), f"{case}: HEAD says {length}"
    got = get_one(url)
    assert (got.status, got.complete, got.body == DATA) == (200, True, True), (
        f"{case}: {got.status} {got.body[:200]!r}"
    )
    setup.upstream.mode("down")
    try:
        again = setup.client.get(url)
    finally:
        setup.upstream.mode("ok")
    assert (again.status_code, again.headers.get("x-cache")) == (200, "HIT"), case


@pytest.mark.parametrize("size", [len(DATA) - 1, len(DATA) + 1, 0, 1])
def test_a_plausible_wrong_size_still_fails_the_download(setup: Setup, size: int) -> None:
    _listed(setup, size)
    got = get_one(f"{setup.proxy.url}/ch/linux-64/{PKG}")
    assert not (got.status == 200 and got.complete), f"size {size}: served as complete"
    setup.upstream.mode("down")
    try:
        again = setup.client.get(f"{setup.proxy.url}/ch/linux-64/{PKG}")
    finally:
        setup.upstream.mode("ok")
    assert again.status_code == 502, f"size {size}: the file was kept"
