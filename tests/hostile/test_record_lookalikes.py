"""Repodata holding objects that look like another file's record: inside another record's field,
under `info`, a duplicate key, the other package map, or beside the real record written with
an escape. A conda client reads a file's record from its package map, the last of duplicate
keys, escapes decoded; the proxy searched the raw bytes for `"<file>": {` and took the first
object found. So one package's record (whose extra fields an uploader to a shared channel
controls) decided another file's checksum: the real file failed verification for every client
(a cut transfer, then a 502), and a file no record lists was cached as if one did. Now the
proxy reads the record as clients do.

Real processes: the test upstream and `condaproxy serve`."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from tests.support.hostile import ZST, get_one, record
from tests.support.hostile import HostileSetup as Setup

pytestmark = pytest.mark.integration

A, B = "a-1.0-0.conda", "b-1.0-0.conda"
OTHER, REAL, EVIL = os.urandom(20_000), os.urandom(30_000), os.urandom(30_000)
FAKE = {"name": "b", "sha256": hashlib.sha256(EVIL).hexdigest(), "size": len(EVIL)}


def _doc(conda: dict[str, object], bz2: dict[str, object] | None = None, **top: object) -> bytes:
    document = {"info": {"subdir": "linux-64"}, "packages": bz2 or {}, "packages.conda": conda}
    return json.dumps({**document, **top}).encode()


def _a(**extra: object) -> dict[str, object]:
    return {**record(A, OTHER), **extra}


REAL_B = json.dumps(record(B, REAL)).encode()
# name -> the repodata body; each lists b with its real checksum, as a client reads it
LISTED = {
    "inside another record": _doc({A: _a(extra={B: FAKE}), B: record(B, REAL)}),
    "deeper inside another record": _doc({A: _a(x=[{"y": {B: FAKE}}]), B: record(B, REAL)}),
    "under info, before the maps": json.dumps(
        {"info": {"subdir": "linux-64", B: FAKE}, "packages.conda": {B: record(B, REAL)}}
    ).encode(),
    "a key of its own, before the maps": json.dumps(
        {"zz": {B: FAKE}, "packages.conda": {B: record(B, REAL)}, "info": {"subdir": "linux-64"}}
    ).encode(),
    "duplicate key, the first one fake": (
        b'{"info": {"subdir": "linux-64"}, "packages.conda": {"'
        + B.encode()
        + b'": '
        + json.dumps(FAKE).encode()
        + b', "'
        + B.encode()
        + b'": '
        + REAL_B
        + b"}}"
    ),
    "in the map of the other kind": _doc({B: record(B, REAL)}, {B: FAKE}),
    "real key escaped, fake inside another record": _doc({A: _a(extra={B: FAKE})})[:-2]
    + b', "'
    + B.replace(".", "\\u002e").encode()
    + b'": '
    + REAL_B
    + b"}}",
}
# name -> a repodata body in which no record lists b: it lies only inside other objects
UNLISTED = {
    "inside another record": _doc({A: _a(extra={B: record(B, REAL)})}),
    "under info": json.dumps(
        {"info": {"subdir": "linux-64", B: record(B, REAL)}, "packages.conda": {A: _a()}}
    ).encode(),
    "in a key of its own": _doc({A: _a()}, removed_records={B: record(B, REAL)}),
}

setup = Setup.fixture("lookalikes", {f"linux-64/{A}": OTHER, f"linux-64/{B}": REAL}, missing=ZST)


def _serve(setup: Setup, repodata: bytes) -> None:
    setup.fresh()
    (setup.upstream.directory / "linux-64" / "repodata.json").write_bytes(repodata)


@pytest.mark.parametrize("case", list(LISTED))
def test_a_lookalike_record_does_not_decide_the_files_checksum(setup: Setup, case: str) -> None:
    _serve(setup, LISTED[case])
    got = get_one(f"{setup.proxy.url}/ch/linux-64/{B}")
    assert (got.status, got.complete) == (200, True), f"{case}: {got.status} {got.body[:200]!r}"
    assert got.body == REAL, case
    setup.upstream.mode("down")
    try:
        again = setup.client.get(f"{setup.proxy.url}/ch/linux-64/{B}")
    finally:
        setup.upstream.mode("ok")
    assert again.status_code == 200 and again.content == REAL, case
    assert again.headers["x-cache"] == "HIT", f"{case}: the verified file was kept"


@pytest.mark.parametrize("case", list(UNLISTED))
def test_a_file_listed_only_inside_other_objects_is_never_cached(setup: Setup, case: str) -> None:
    _serve(setup, UNLISTED[case])
    got = get_one(f"{setup.proxy.url}/ch/linux-64/{B}")
    assert (got.status, got.body) == (200, REAL), case  # streamed through, unverified
    assert got.headers["cache-control"] == "no-store", case
    setup.upstream.mode("down")
    try:
        again = setup.client.get(f"{setup.proxy.url}/ch/linux-64/{B}")
    finally:
        setup.upstream.mode("ok")
    assert again.status_code == 502, f"{case}: a file no record lists was kept"
