"""Repodata whose CEP-15 `info.base_url` hides from the proxy's rewrite but not from clients:
a second `info` key (Python's json, conda's reader, takes the last), a key written with a JSON
escape (`base\\u005furl`, `in\\u0066o`), a copy of `info` inside a record before the real one.
The proxy looked for the raw bytes `"base_url"` and rewrote the first `"info": {...}` that
matched, so the document it served still sent conda to the upstream's CDN for every package,
around the proxy (and its cache, its policy, its checks). Now the served document has no
base_url as a client reads it, or it is refused as unusable (a 502 naming the upstream).

Real processes: the test upstream and `condaproxy serve`."""

from __future__ import annotations

import json
import os

import pytest
import zstandard

from tests.support.hostile import HostileSetup as Setup
from tests.support.hostile import record

pytestmark = pytest.mark.integration

PKG = "b-1.0-0.conda"
DATA = os.urandom(10_000)
CDN = "https://cdn.example.invalid/ch/linux-64/"
INFO = {"subdir": "linux-64", "base_url": CDN}
INFO_JSON = json.dumps(INFO)
MAPS = json.dumps({"packages": {}, "packages.conda": {PKG: record(PKG, DATA)}})[1:-1]
WITH_COPY = {**record(PKG, DATA), "info": INFO}

DOCUMENTS = {
    "two info keys, both with base_url": f'{{"info": {INFO_JSON}, {MAPS}, "info": {INFO_JSON}}}',
    "two info keys, the last with base_url": (
        f'{{"info": {{"subdir": "linux-64"}}, {MAPS}, "info": {INFO_JSON}}}'
    ),
    "two info keys, other base_urls": (
        f'{{"info": {INFO_JSON}, {MAPS}, '
        f'"info": {{"subdir": "linux-64", "base_url": "https://other.invalid/"}}}}'
    ),
    "base_url key escaped": (
        f'{{"info": {{"subdir": "linux-64", "base\\u005furl": "{CDN}"}}, {MAPS}}}'
    ),
    "info key escaped": f'{{"in\\u0066o": {INFO_JSON}, {MAPS}}}',
    "a copy of info inside a record, first": json.dumps(
        {"packages.conda": {PKG: WITH_COPY}, "packages": {}, "info": INFO}
    ),
    "base_url escaped slashes": (
        f'{{"info": {{"subdir": "linux-64", "base_url": '
        f'"{CDN.replace("/", chr(92) + "/")}"}}, {MAPS}}}'
    ),
    "base_url not a string": f'{{"info": {{"subdir": "linux-64", "base_url": 5}}, {MAPS}}}',
    "plain base_url": f'{{"info": {INFO_JSON}, {MAPS}}}',  # the ordinary case, for reference
}

setup = Setup.fixture("base_url", {f"linux-64/{PKG}": DATA})


@pytest.mark.parametrize("form", ["repodata.json", "repodata.json.zst"])
@pytest.mark.parametrize("case", list(DOCUMENTS))
def test_no_client_sees_a_base_url_around_the_proxy(setup: Setup, case: str, form: str) -> None:
    setup.fresh()
    document = DOCUMENTS[case].encode()
    json.loads(document)  # valid JSON, as every client reads it
    subdir = setup.upstream.directory / "linux-64"
    (subdir / "repodata.json").write_bytes(document)
    if form == "repodata.json.zst":
        (subdir / "repodata.json.zst").write_bytes(zstandard.compress(document))
    else:
        (subdir / "repodata.json.zst").unlink(missing_ok=True)
    got = setup.client.get(
        f"{setup.proxy.url}/ch/linux-64/repodata.json", headers={"accept-encoding": "identity"}
    )
    if got.status_code == 502:  # refused as unusable: fine, if it names the upstream
        assert setup.upstream.url in got.json()["upstream"], got.text
        return
    assert got.status_code == 200, got.text
    info = json.loads(got.content)["info"]  # what conda reads: the last key, escapes decoded
    assert "base_url" not in info, f"{case}: clients are sent to {info['base_url']!r}"
    assert info["subdir"] == "linux-64"
