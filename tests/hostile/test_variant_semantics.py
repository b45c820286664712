"""Every repodata variant means one thing, whoever asks and however.

A HEAD answers exactly what a GET would, also before a derived variant (the gzip coding,
`.json.bz2`) exists: mamba trusts a HEAD's 200 and has no fallback after the GET. A `.zst`
from upstream that is cut short (its last block or checksum gone, with a Content-Length that
matches) still decodes to a whole document in a streaming reader, but every client's decoder
refuses it: it never passes through. An upstream `current_repodata.json` that fails is not a
5xx for conda's classic solver when the full snapshot, a valid superset, can be served.
Real processes: the test upstream and `condaproxy serve`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zstandard

from tests.support.hostile import http, listed_channel, no_crash_in_log
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

SUBDIRS = ("linux-64", "osx-64", "win-64", "linux-aarch64")
SEEN = ("status", "content-length", "content-encoding", "etag", "vary", "last-modified")


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    listed = {f"{subdir}/tool-1.0-0.conda": subdir.encode() * 50 for subdir in SUBDIRS}
    channel = listed_channel(tmp_path / "upstream", listed)
    for subdir in (*SUBDIRS, "noarch"):
        document = (channel / subdir / "repodata.json").read_bytes()
        (channel / subdir / "repodata.json.zst").write_bytes(zstandard.compress(document))
    server = Upstream(channel).start()
    yield server
    server.stop()


def start_proxy(tmp_path: Path, upstream: Upstream, ttl: int) -> Proxy:
    config = write_config(
        tmp_path / "proxy.toml",
        tmp_path / "cache",
        {"cf": {"upstream": upstream.url + "/"}},
        ttl=ttl,
    )
    return Proxy(config).start()


@pytest.fixture
def proxy(tmp_path: Path, upstream: Upstream) -> Iterator[Proxy]:
    started = start_proxy(tmp_path, upstream, ttl=60)
    yield started
    started.stop()
    no_crash_in_log(started.log())


@pytest.fixture
def revalidating(tmp_path: Path, upstream: Upstream) -> Iterator[Proxy]:
    """A proxy that asks the upstream again on every request (repodata_ttl = 0)."""
    started = start_proxy(tmp_path, upstream, ttl=0)
    yield started
    started.stop()
    no_crash_in_log(started.log())


def raw(client: httpx.Client, method: str, url: str, **headers: str) -> tuple[dict, bytes]:
    """Status, the headers that describe the representation, and the bytes as sent."""
    with client.stream(method, url, headers=headers) as response:
        body = b"".join(response.iter_raw())
    seen = {k: response.headers.get(k) for k in SEEN[1:]}
    return {"status": response.status_code, **seen}, body


def strict_unzstd(data: bytes) -> bytes:
    """What a strict decoder (zstd -d, libzstd's one-shot API) makes of `data`."""
    return zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 24)


def cut_short(document: bytes) -> bytes:
    """A one-frame .zst of `document` without its 4-byte checksum: a streaming reader still
    yields the whole document, the frame itself is incomplete."""
    whole = zstandard.ZstdCompressor(write_checksum=True).compress(document)
    return whole[:-4]


@pytest.mark.parametrize(
    ("subdir", "filename", "accept"),
    [
        ("linux-64", "repodata.json", "gzip, deflate"),
        ("osx-64", "current_repodata.json", "gzip"),
        ("win-64", "repodata.json.bz2", "identity"),
    ],
)
def test_head_before_any_get_answers_what_the_get_then_sends(
    proxy: Proxy, subdir: str, filename: str, accept: str
) -> None:
    url = f"{proxy.url}/cf/{subdir}/{filename}"
    with http() as client:
        head, head_body = raw(client, "HEAD", url, **{"accept-encoding": accept})
        get, body = raw(client, "GET", url, **{"accept-encoding": accept})
        again, _ = raw(client, "HEAD", url, **{"accept-encoding": accept})
    assert get["status"] == 200 and head_body == b""
    assert head == get == again
    assert int(get["content-length"]) == len(body)


def test_a_zst_cut_short_upstream_is_never_served_nor_replaces_the_snapshot(
    revalidating: Proxy, upstream: Upstream
) -> None:
    base = f"{revalidating.url}/cf/linux-64"
    good = json.loads((Path(upstream.directory) / "linux-64" / "repodata.json").read_bytes())
    with http() as client:
        first = client.get(f"{base}/repodata.json.zst")
        assert first.status_code == 200 and json.loads(strict_unzstd(first.content)) == good
        changed = {**good, "packages.conda": {}}  # the change a client must not half-see
        upstream.override(
            "/linux-64/repodata.json.zst",
            cut_short(json.dumps(changed).encode()),
            headers={"etag": '"cut"'},
        )
        for filename, accept in (
            ("repodata.json.zst", "identity"),
            ("repodata.json", "zstd"),
            ("repodata.json", "identity"),
            ("current_repodata.json", "zstd"),
        ):
            response = client.get(f"{base}/{filename}", headers={"accept-encoding": accept})
            assert response.status_code == 200, (filename, response.text)
            assert response.headers["x-cache"] == "STALE", filename
            # httpx undoes the zstd coding with a strict decoder; the .zst file is undone here
            body = response.content
            document = strict_unzstd(body) if filename.endswith(".zst") else body
            assert json.loads(document) == good, filename
    assert "unusable .zst body" in revalidating.log()


@pytest.mark.parametrize("filename", ["repodata.json.zst", "run_exports.json.zst"])
def test_a_zst_cut_short_with_nothing_cached_is_a_502_naming_the_upstream(
    proxy: Proxy, upstream: Upstream, filename: str
) -> None:
    document = (Path(upstream.directory) / "osx-64" / "repodata.json").read_bytes()
    upstream.override(f"/osx-64/{filename}", cut_short(document))
    with http() as client:
        response = client.get(f"{proxy.url}/cf/osx-64/{filename}")
    assert response.status_code == 502, response.content[:200]
    assert f"{upstream.url}/osx-64/{filename}" in response.json()["upstream"]
    assert "cut short" in response.json()["error"]


@pytest.mark.parametrize(("status", "body"), [(503, b"busy"), (200, b"<html>a login page</html>")])
def test_current_repodata_failing_upstream_serves_the_full_snapshot_not_a_5xx(
    proxy: Proxy, upstream: Upstream, status: int, body: bytes
) -> None:
    full = json.loads((Path(upstream.directory) / "linux-aarch64" / "repodata.json").read_bytes())
    upstream.override("/linux-aarch64/current_repodata.json", body, status=status)
    with http() as client:
        response = client.get(f"{proxy.url}/cf/linux-aarch64/current_repodata.json")
    assert response.status_code == 200, response.text[:300]
    assert response.json() == full


def test_a_field_sent_on_two_lines_counts_whole(proxy: Proxy) -> None:
    """RFC 9110 §5.3: list fields on several lines are one list; the last line alone would
    send zstd to a client that refused it, and a 200 to one that holds the representation."""
    url = f"{proxy.url}/cf/linux-64/repodata.json"
    with http() as client:
        refused = [("accept-encoding", "zstd;q=0"), ("accept-encoding", "gzip, *")]
        response = client.get(url, headers=refused)
        assert response.status_code == 200
        assert response.headers["content-encoding"] == "gzip"
        held = response.headers["etag"]
        both = [*refused, ("if-none-match", held), ("if-none-match", '"another"')]
        assert client.get(url, headers=both).status_code == 304
