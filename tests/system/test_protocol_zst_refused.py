"""PROTOCOL.md: `repodata.json` is everyone's fallback, and a 404 for it on `noarch` is fatal for
every client (anything but 404 on any subdir). The proxy asks its upstream for
`repodata.json.zst` first and derives every format from whichever document it got. An upstream
that does not serve the `.zst` need not say so with a 404: an S3 or GCS bucket without list
permission answers 403 for a key that does not exist, some servers 401 for any unknown path,
400 or 405 for a suffix they do not know, 501 for what they do not implement. mamba and rattler
asking that upstream themselves HEAD the `.zst`, read any of these as "no .zst" and fetch
`repodata.json`; through the proxy the `.zst`'s 403 became a 502 for `repodata.json` itself
(and for `.zst`, `.bz2` and `current_repodata.json`), and no client could use the channel.

Run against a real upstream process and a real `condaproxy serve`, and a real client
(py-rattler, repodata.json without shards)."""

from __future__ import annotations

import bz2
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zstandard

from tests.support.channel import Pkg, build_channel
from tests.support.clients import rattler_install
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

PACKAGES = (
    Pkg("libzlib", "1.3", "h0", "linux-64"),
    Pkg("pyutil", "0.4", "pyh0", "noarch"),
    Pkg("datatool", "1.0", "h2", "linux-64", ("libzlib >=1.2", "pyutil")),
)
SUBDIRS = ("noarch", "linux-64")
# What servers answer for a file they do not have, besides 404/410.
NOT_SERVED_HERE = (400, 401, 403, 405, 501)
S3_DENIED = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>"


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("zst-refused")
    return build_channel(base / "channel", base / "work", PACKAGES)


@pytest.fixture(scope="module")
def upstream(channel: Path) -> Iterator[Upstream]:
    server = Upstream(channel).start()
    yield server
    server.stop()


@pytest.fixture
def proxy(upstream: Upstream, tmp_path: Path) -> Iterator[Proxy]:
    upstream.reset()
    config = write_config(
        tmp_path / "p.toml", tmp_path / "cache", {"cf": {"upstream": upstream.url}}
    )
    started = Proxy(config).start()
    yield started
    started.stop()
    upstream.reset()


def refuse_zst(upstream: Upstream, status: int) -> None:
    for subdir in SUBDIRS:
        upstream.override(f"/{subdir}/repodata.json.zst", S3_DENIED, status=status)


def packages_of(document: bytes) -> tuple[str, set[str]]:
    parsed = json.loads(document)
    return parsed["info"]["subdir"], {*parsed["packages"], *parsed["packages.conda"]}


@pytest.mark.parametrize("subdir", SUBDIRS)
@pytest.mark.parametrize("status", NOT_SERVED_HERE)
def test_a_zst_the_upstream_refuses_still_leaves_every_format_served(
    proxy: Proxy, upstream: Upstream, channel: Path, status: int, subdir: str
) -> None:
    refuse_zst(upstream, status)
    expected = packages_of((channel / subdir / "repodata.json").read_bytes())
    base = f"{proxy.url}/cf/{subdir}"
    with httpx.Client(timeout=30) as client:
        # mamba and rattler probe the compressed formats first, conda GETs the .zst
        for name in ("repodata.json.zst", "repodata.json.bz2", "repodata.json"):
            head = client.head(f"{base}/{name}")
            assert head.status_code == 200, (name, head.status_code, head.text)
        plain = client.get(f"{base}/repodata.json", headers={"accept-encoding": "identity"})
        assert plain.status_code == 200, plain.text
        assert packages_of(plain.content) == expected
        zst = client.get(f"{base}/repodata.json.zst")
        assert zst.status_code == 200, zst.text
        inflated = zstandard.ZstdDecompressor().decompressobj().decompress(zst.content)
        assert packages_of(inflated) == expected
        assert packages_of(bz2.decompress(client.get(f"{base}/repodata.json.bz2").content)) == (
            expected
        )
        current = client.get(f"{base}/current_repodata.json", headers={"accept-encoding": "gzip"})
        assert current.status_code == 200, current.text
    # the .zst was asked once: the copy now comes from (and is revalidated at) repodata.json
    assert upstream.count("GET", f"/{subdir}/repodata.json.zst") == 1
    assert upstream.count("GET", f"/{subdir}/repodata.json") == 1


@pytest.mark.parametrize(
    ("zst", "plain", "expected"),
    [
        (403, 403, 502),  # a credential the upstream refuses is a failure, named
        (401, 500, 502),
        (403, 404, 404),  # nothing there in any format: an empty subdir, as upstream says
        (500, None, 502),  # a broken upstream is not asked again for another format
        (429, None, 502),
    ],
)
def test_the_last_formats_answer_is_the_answer(
    proxy: Proxy, upstream: Upstream, zst: int, plain: int | None, expected: int
) -> None:
    upstream.override("/linux-64/repodata.json.zst", S3_DENIED, status=zst)
    if plain is not None:
        upstream.override("/linux-64/repodata.json", S3_DENIED, status=plain)
    got = httpx.get(f"{proxy.url}/cf/linux-64/repodata.json", timeout=30)
    assert got.status_code == expected, got.text
    body = got.json()
    if expected == 502:
        last = "repodata.json.zst" if plain is None else "repodata.json"
        assert body["upstream"].endswith(f"/linux-64/{last}"), body
    asked_plain = upstream.count("GET", "/linux-64/repodata.json")
    assert asked_plain == (0 if plain is None else 1)


@pytest.mark.e2e
def test_rattler_installs_from_an_upstream_that_refuses_its_zst(
    proxy: Proxy, upstream: Upstream, tmp_path: Path
) -> None:
    refuse_zst(upstream, 403)
    result = rattler_install(f"{proxy.url}/cf", tmp_path / "client", False, "datatool")
    assert result["ok"], result.get("error")
    assert {r["name"] for r in result["records"]} == {"datatool", "libzlib", "pyutil"}


@pytest.mark.parametrize("status", [403, 501])
def test_conda_asking_for_the_zst_first_gets_one_with_passthrough_refreshes(
    upstream: Upstream, tmp_path: Path, status: int
) -> None:
    """conda GETs `repodata.json.zst` first, with no HEAD; with `cache.refresh_passthrough`
    that GET follows the refresh as it arrives: a refused .zst upstream still ends in the
    snapshot made from repodata.json, and HEAD agrees with GET (mamba trusts its HEAD)."""
    upstream.reset()
    refuse_zst(upstream, status)
    config = write_config(
        tmp_path / "p.toml",
        tmp_path / "cache",
        {"cf": {"upstream": upstream.url}},
        extra="refresh_passthrough = true\n",
    )
    proxy = Proxy(config).start()
    try:
        got = httpx.get(f"{proxy.url}/cf/noarch/repodata.json.zst", timeout=30)
        assert got.status_code == 200, got.text
        head = httpx.head(f"{proxy.url}/cf/noarch/repodata.json.zst", timeout=30)
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(got.content))
        assert head.headers["etag"] == got.headers["etag"]
    finally:
        proxy.stop()
        upstream.reset()


@pytest.fixture
def quick(upstream: Upstream, tmp_path: Path) -> Iterator[Proxy]:
    """A proxy that revalidates after a second (repodata_ttl = 1)."""
    upstream.reset()
    config = write_config(
        tmp_path / "p.toml", tmp_path / "cache", {"cf": {"upstream": upstream.url}}, ttl=1
    )
    started = Proxy(config).start()
    yield started
    started.stop()
    upstream.reset()


def after_the_ttl(proxy: Proxy, path: str) -> httpx.Response:
    time.sleep(1.2)
    return httpx.get(f"{proxy.url}/cf/{path}", headers={"accept-encoding": "identity"}, timeout=30)


@pytest.mark.parametrize("status", [404, 410, 403, 501])
def test_a_zst_that_goes_away_after_the_copy_was_made_from_it_is_not_a_404_for_the_document(
    quick: Proxy, upstream: Upstream, channel: Path, status: int
) -> None:
    """The copy was made from the upstream's .zst; the channel is then re-indexed without one
    (or its bucket starts refusing the key). The revalidation asked that URL alone, so the
    .zst's 404 became a 404 for `noarch/repodata.json` (fatal for every client) and a 403 a
    stale copy served forever with max-age=0, while the upstream's repodata.json was there."""
    expected = packages_of((channel / "noarch" / "repodata.json").read_bytes())
    first = after_the_ttl(quick, "noarch/repodata.json")
    assert first.status_code == 200 and upstream.count("GET", "/noarch/repodata.json.zst") == 1
    upstream.override("/noarch/repodata.json.zst", S3_DENIED, status=status)
    for _ in range(2):
        again = after_the_ttl(quick, "noarch/repodata.json")
        assert again.status_code == 200, again.text
        assert "warning" not in again.headers, "a fresh copy, not the stale one"
        assert packages_of(again.content) == expected
        zst = httpx.head(f"{quick.url}/cf/noarch/repodata.json.zst", timeout=30)
        assert zst.status_code == 200
    # from then on the copy is revalidated where it now comes from
    assert upstream.count("GET", "/noarch/repodata.json.zst") == 2
    assert upstream.count("GET", "/noarch/repodata.json") == 2


@pytest.mark.parametrize(
    ("zst", "plain", "expected", "stale"),
    [
        (404, 404, 404, False),  # the document is gone in every format: as upstream says
        (500, None, 200, True),  # a broken upstream: the copy, stale, as before
        (404, 500, 200, True),
    ],
)
def test_a_revalidation_that_finds_no_format_answers_as_before(
    quick: Proxy, upstream: Upstream, zst: int, plain: int | None, expected: int, stale: bool
) -> None:
    assert after_the_ttl(quick, "linux-64/repodata.json").status_code == 200
    upstream.override("/linux-64/repodata.json.zst", S3_DENIED, status=zst)
    if plain is not None:
        upstream.override("/linux-64/repodata.json", S3_DENIED, status=plain)
    again = after_the_ttl(quick, "linux-64/repodata.json")
    assert again.status_code == expected, again.text
    assert ("warning" in again.headers) is stale
