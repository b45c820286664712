"""Dependency confusion by direct URL: with an upload named `ours` in a channel over an upstream,
the upstream's `zzz-9.0-0.conda` (and `.tar.bz2`) whose record says `"name": "ours"` is hidden
from every view; asking for its URL through that channel must be a 404 too, whatever the way
in: cached before the upload or not, its record found in the upstream's repodata or in its
shards (where rattler's indexer files it under `ours`, not `zzz`), with or without the
client's X-Expected-Sha256. Real upstream process, real proxy."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package, index_channel
from tests.support.processes import Upstream

pytestmark = pytest.mark.e2e

WRITE, ADMIN = "ci-write-token-1", "ops-admin-token-1"
MINE = Pkg("ours", "1.0", "h0", "linux-64")
IMPOSTORS = ("zzz-9.0-0.conda", "zzz-9.0-0.tar.bz2")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("hidden-by-url")
    channel, work = base / "channel", base / "work"
    for ext in (".conda", ".tar.bz2"):
        built = build_package(Pkg("ours", "9.0", "0", "linux-64", ext=ext), work, channel)
        built.rename(channel / "linux-64" / f"zzz-9.0-0{ext}")
    build_package(Pkg("other", "1.0", "h0", "linux-64"), work, channel)
    index_channel(channel)
    server = Upstream(channel).start()
    yield server
    server.stop()


def upload(url: str, tmp_path: Path) -> None:
    mine = build_package(MINE, tmp_path / "work", tmp_path / "mine")
    answer = httpx.post(
        f"{url}/api/channels/team/upload/{mine.name}",
        content=mine.read_bytes(),
        headers={"x-api-key": WRITE},
        timeout=60,
    )
    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize("filename", IMPOSTORS)
@pytest.mark.parametrize("lookup", ["shards", "repodata"])
@pytest.mark.parametrize("cached", [False, True], ids=["cold", "cached"])
def test_a_file_hidden_by_an_upload_is_a_404_by_direct_url(
    upstream: Upstream, start_proxy, tmp_path: Path, filename: str, lookup: str, cached: bool
) -> None:
    proxy = start_proxy(
        {"team": {"upstream": upstream.url}},
        tokens={
            "ci": {"token": WRITE, "roles": {"team": "write"}},
            "ops": {"token": ADMIN, "roles": {"*": "admin"}},
        },
    )
    original = httpx.get(f"{upstream.url}/linux-64/{filename}").content
    url = f"{proxy.url}/team/linux-64/{filename}"
    if cached:  # a client installed it before `ours` was uploaded
        assert httpx.get(f"{proxy.url}/team/linux-64/repodata.json").status_code == 200
        before = httpx.get(url)
        assert before.status_code == 200 and before.content == original
        if lookup == "shards":  # the repodata snapshot goes; the cached file stays
            purged = httpx.delete(
                f"{proxy.url}/api/cache/team/linux-64?metadata_only=true",
                headers={"x-api-key": ADMIN},
            )
            assert purged.status_code == 200, purged.text
    upload(proxy.url, tmp_path)
    if lookup == "repodata":
        merged = httpx.get(f"{proxy.url}/team/linux-64/repodata.json").json()
        shown = {**merged["packages"], **merged["packages.conda"]}
        assert MINE.filename in shown and filename not in shown

    claim = {"x-expected-sha256": hashlib.sha256(original).hexdigest()}
    for method, headers in (("GET", {}), ("GET", claim), ("HEAD", {})):
        answer = httpx.request(method, url, headers=headers)
        assert answer.status_code == 404, (method, headers, answer.status_code)
        if method == "GET":
            assert "hidden" in answer.json()["error"], answer.text
    # Through the token path form too; the upload itself is served, and so is an upstream
    # package the uploads do not hide.
    assert httpx.get(f"{proxy.url}/t/{WRITE}/team/linux-64/{filename}").status_code == 404
    assert httpx.get(f"{proxy.url}/team/linux-64/{MINE.filename}").status_code == 200
    other = httpx.get(f"{proxy.url}/team/linux-64/other-1.0-h0.conda")
    assert other.status_code == 200
    assert other.content == httpx.get(f"{upstream.url}/linux-64/other-1.0-h0.conda").content
