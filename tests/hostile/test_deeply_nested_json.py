"""JSON from upstream that nests arrays or objects thousands deep: a few KB of `[[[[...]]]]` in a
record's `depends`, in `info`, under a key conda does not know, or in channeldata.json. The
proxy's JSON decoder descends such a document on the C stack and gives up with RecursionError
(also when it only skips the value), which answered 500 and, with a good copy cached, did not
serve it. It is a malformed document like any other: a 502 naming the upstream, or the stale
copy.

Real processes: the test upstream and `condaproxy serve`."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.support.hostile import ZST
from tests.support.hostile import HostileSetup as Setup

pytestmark = pytest.mark.integration

TTL = 1
PKG = "linux-64/small-1.0-0.conda"
DEPTH = 100_000
DEEP_ARRAY = "[" * DEPTH + "]" * DEPTH
DEEP_OBJECT = '{"a": ' * DEPTH + "1" + "}" * DEPTH
RECORD = {"name": "small", "version": "1.0", "build": "0", "build_number": 0, "depends": []}


def repodata(where: str, deep: str) -> bytes:
    document = {
        "info": {"subdir": "linux-64", "x": "INFO"},
        "packages": {},
        "packages.conda": {"small-1.0-0.conda": {**RECORD, "depends": "DEPENDS"}},
        "repodata_version": 1,
        "extra": "EXTRA",
    }
    text = json.dumps(document)
    for slot in ("INFO", "DEPENDS", "EXTRA"):
        text = text.replace(f'"{slot}"', deep if slot.lower() == where else "[]")
    return text.encode()


CASES = {
    f"{where}, {shape}": (where, deep)
    for where in ("depends", "info", "extra")
    for shape, deep in (("arrays", DEEP_ARRAY), ("objects", DEEP_OBJECT))
}
GOOD = repodata("none", "")


setup = Setup.fixture("nested", {PKG: os.urandom(1024)}, ttl=TTL, missing=ZST, identity=True)


@pytest.mark.parametrize("case", list(CASES))
def test_deeply_nested_repodata_with_nothing_cached_is_a_502(setup: Setup, case: str) -> None:
    setup.fresh()
    setup.upstream.override("/linux-64/repodata.json", repodata(*CASES[case]))
    r = setup.get("linux-64/repodata.json")
    assert r.status_code == 502, r.text[:300]
    assert r.json()["upstream"] == f"{setup.upstream.url}/linux-64/repodata.json"
    # A package of the subdir: its record cannot be read from that document either.
    assert setup.get(PKG).status_code == 502


@pytest.mark.parametrize("case", list(CASES))
def test_deeply_nested_repodata_never_replaces_the_good_copy(setup: Setup, case: str) -> None:
    setup.fresh()
    setup.upstream.override("/linux-64/repodata.json", GOOD)
    assert setup.get("linux-64/repodata.json").content == GOOD
    time.sleep(TTL + 0.1)
    setup.upstream.override("/linux-64/repodata.json", repodata(*CASES[case]))
    r = setup.get("linux-64/repodata.json")
    assert r.status_code == 200
    assert r.headers["x-cache"] == "STALE"
    assert r.content == GOOD


@pytest.mark.parametrize("deep", [DEEP_ARRAY, DEEP_OBJECT], ids=["arrays", "objects"])
@pytest.mark.parametrize("path", ["channeldata.json", "linux-64/run_exports.json"])
def test_deeply_nested_channel_metadata_is_a_502(setup: Setup, path: str, deep: str) -> None:
    setup.fresh()
    setup.upstream.override(f"/{path}", ('{"packages": ' + deep + "}").encode())
    r = setup.get(path)
    assert r.status_code == 502, r.text[:300]
    assert r.json()["upstream"] == f"{setup.upstream.url}/{path}"
