"""What conda, mamba and rattler rely on (PROTOCOL.md), asked of a real proxy process in front of
a real upstream: resumed downloads (Range, If-Range with an ETag or a date, on a hit and on a
download under way), HEAD equal to GET, conditional requests on packages, file names with `+`
and `!` sent encoded or not, `/t/<token>/` where each client puts it, labels, and upstreams that
redirect to a CDN, answer 304 without an ETag, gzip their JSON, or say "not now" (429/503: a
502 with their Retry-After)."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_channel
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

PACKAGES = (
    Pkg("libzlib", "1.3", "h0", "linux-64"),
    Pkg("libzlib", "1.3", "h0", "linux-64", ext=".tar.bz2"),
    Pkg("local_build", "1.0+cuda.12", "h_0", "linux-64", payload_size=2_500_000),
    Pkg("epoch", "1!2.0", "py_0", "noarch"),
)
BIG = "linux-64/local_build-1.0+cuda.12-h_0.conda"
# Headers a HEAD must repeat from its GET (mamba and rattler trust a HEAD's answer).
SAME = ("content-type", "content-length", "etag", "cache-control", "accept-ranges")


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("conformance")
    built = build_channel(base / "channel", base / "work", PACKAGES)
    # anaconda.org labels: the same channel again below label/dev
    shutil.copytree(built, base / "dev")
    shutil.move(base / "dev", built / "label" / "dev")
    return built


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
    upstream.mode("ok")
    upstream.reset()


def sha256_etag(data: bytes) -> str:
    return f'"{hashlib.sha256(data).hexdigest()}"'


def test_a_package_the_client_holds_is_a_304_before_any_download(
    proxy: Proxy, upstream: Upstream, channel: Path
) -> None:
    """RFC 9110 §13.1.2: If-None-Match is evaluated before the method; the ETag of a package
    is its published sha256, known from the record whether or not the file is cached."""
    for name in ("linux-64/libzlib-1.3-h0.conda", "linux-64/libzlib-1.3-h0.tar.bz2"):
        etag = sha256_etag((channel / name).read_bytes())
        for method in ("GET", "HEAD"):
            held = httpx.request(method, f"{proxy.url}/cf/{name}", headers={"if-none-match": etag})
            assert held.status_code == 304, (name, method, held.status_code)
            assert held.headers["etag"] == etag and held.content == b""
        assert upstream.count("GET", f"/{name}") == 0, "no download for a client that has it"
        other = httpx.get(f"{proxy.url}/cf/{name}", headers={"if-none-match": '"another"'})
        assert other.status_code == 200 and other.content == (channel / name).read_bytes()
        again = httpx.get(f"{proxy.url}/cf/{name}", headers={"if-none-match": etag})
        assert again.status_code == 304 and again.headers["x-cache"] == "HIT"


@pytest.mark.parametrize("status", [429, 503])
def test_an_upstream_that_says_not_now_is_a_502_with_its_retry_after(
    proxy: Proxy, upstream: Upstream, status: int
) -> None:
    """An upstream's 429/503 is an upstream failure (a 502 naming the upstream), carrying the
    upstream's Retry-After (seconds or a date, as seconds) when it gave one."""
    package = "/linux-64/libzlib-1.3-h0.conda"
    upstream.override(package, b"slow down", status=status, headers={"retry-after": "7"})
    upstream.override("/osx-64/repodata.json.zst", b"busy", status=status)
    later = formatdate(time.time() + 30, usegmt=True)
    upstream.override(
        "/win-64/repodata.json.zst", b"busy", status=status, headers={"retry-after": later}
    )
    answer = httpx.get(f"{proxy.url}/cf{package}")
    assert answer.status_code == 502, answer.text
    assert answer.headers["retry-after"] == "7"
    assert answer.json()["upstream"] == f"{upstream.url}{package}"
    assert f"HTTP {status}" in answer.json()["error"]
    repodata = httpx.get(f"{proxy.url}/cf/osx-64/repodata.json")
    assert repodata.status_code == 502 and "retry-after" not in repodata.headers
    dated = httpx.get(f"{proxy.url}/cf/win-64/repodata.json")
    assert dated.status_code == 502 and 0 < int(dated.headers["retry-after"]) <= 30
    # an upstream 500 is a 502 without Retry-After; the shard index still falls back with a 404
    upstream.override("/osx-64/repodata_shards.msgpack.zst", b"busy", status=status)
    assert httpx.get(f"{proxy.url}/cf/osx-64/repodata_shards.msgpack.zst").status_code == 404
    upstream.override("/linux-64/libzlib-1.3-h0.tar.bz2", b"oops", status=500)
    assert httpx.get(f"{proxy.url}/cf/linux-64/libzlib-1.3-h0.tar.bz2").status_code == 502


def test_a_resumed_download_gets_exactly_the_missing_bytes(
    proxy: Proxy, upstream: Upstream, channel: Path
) -> None:
    """conda resumes with `Range: bytes=N-`; rattler's sparse reader asks a suffix range with
    If-Range. During the one upstream download, and from the cache after it."""
    data = (channel / BIG).read_bytes()
    url = f"{proxy.url}/cf/{BIG}"
    upstream.mode("rate:1")  # the download takes a few seconds
    first: dict[str, object] = {}

    def whole() -> None:
        response = httpx.get(url, timeout=60)
        first.update(status=response.status_code, same=response.content == data)

    thread = threading.Thread(target=whole)
    thread.start()
    time.sleep(0.5)
    during = httpx.get(url, headers={"range": "bytes=1000-"}, timeout=60)
    thread.join()
    assert first == {"status": 200, "same": True}
    assert during.status_code == 206 and during.content == data[1000:]
    assert during.headers["content-range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    assert upstream.count("GET", f"/{BIG}") == 1

    etag = during.headers["etag"]
    assert etag == sha256_etag(data)
    hit = httpx.get(url)
    modified = hit.headers["last-modified"]
    for if_range in (etag, modified):
        tail = httpx.get(url, headers={"range": "bytes=-4096", "if-range": if_range})
        assert tail.status_code == 206 and tail.content == data[-4096:], if_range
    for stale in ('"not-this-file"', "Thu, 01 Jan 1998 00:00:00 GMT", f"W/{etag}"):
        whole_again = httpx.get(url, headers={"range": "bytes=-4096", "if-range": stale})
        assert whole_again.status_code == 200 and whole_again.content == data, stale
    past = httpx.get(url, headers={"range": f"bytes={len(data)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"
    assert upstream.count("GET", f"/{BIG}") == 1


def test_head_answers_what_get_would_for_every_file_kind(proxy: Proxy, channel: Path) -> None:
    names = [
        "linux-64/libzlib-1.3-h0.conda",
        "linux-64/libzlib-1.3-h0.tar.bz2",
        "linux-64/repodata.json",
        "linux-64/repodata.json.zst",
        "linux-64/repodata_shards.msgpack.zst",
        "noarch/current_repodata.json",
    ]
    types = {
        ".conda": "application/octet-stream",
        ".json": "application/json",
        ".zst": ("application/zstd", "application/octet-stream"),
    }
    for name in names:
        url = f"{proxy.url}/cf/{name}"
        head_cold = httpx.head(url)
        got = httpx.get(url)
        head_warm = httpx.head(url)
        assert got.status_code == head_cold.status_code == head_warm.status_code == 200, name
        for field in SAME:
            assert head_cold.headers.get(field) == got.headers.get(field), (name, field)
            assert head_warm.headers.get(field) == got.headers.get(field), (name, field)
        if "content-encoding" not in got.headers:
            assert int(got.headers["content-length"]) == len(got.content), name
        wanted = next((v for k, v in types.items() if name.endswith(k)), None)
        if wanted is not None:
            assert got.headers["content-type"] in (
                wanted if isinstance(wanted, tuple) else (wanted,)
            )
        if name.endswith((".conda", ".tar.bz2")):
            assert got.content == (channel / name).read_bytes()


def test_file_names_tokens_and_labels_reach_the_same_bytes(
    proxy: Proxy, upstream: Upstream, channel: Path
) -> None:
    """`+` (local version) and `!` (epoch) arrive encoded or not; rattler puts `/t/<token>/`
    first, conda after the channel; labels are channels below the same upstream."""
    cases = {
        "linux-64/local_build-1.0+cuda.12-h_0.conda": [
            "/cf/linux-64/local_build-1.0+cuda.12-h_0.conda",
            "/cf/linux-64/local_build-1.0%2Bcuda.12-h_0.conda",
            "/t/tk-1/cf/linux-64/local_build-1.0%2bcuda.12-h_0.conda",
        ],
        "noarch/epoch-1!2.0-py_0.conda": [
            "/cf/noarch/epoch-1!2.0-py_0.conda",
            "/cf/noarch/epoch-1%212.0-py_0.conda",
            "/cf/t/tk-1/noarch/epoch-1%212.0-py_0.conda",
            "/cf/label/dev/noarch/epoch-1%212.0-py_0.conda",
            "/t/tk-1/cf/label/dev/noarch/epoch-1!2.0-py_0.conda",
            "/cf/t/tk-1/label/dev/noarch/epoch-1!2.0-py_0.conda",
        ],
    }
    for name, paths in cases.items():
        data = (channel / name).read_bytes()
        for path in paths:
            response = httpx.get(proxy.url + path)
            assert response.status_code == 200 and response.content == data, path
    fetched = {s["path"] for s in upstream.seen() if s["path"].endswith(".conda")}
    assert fetched == {
        "/linux-64/local_build-1.0+cuda.12-h_0.conda",
        "/noarch/epoch-1!2.0-py_0.conda",
        "/label/dev/noarch/epoch-1!2.0-py_0.conda",
    }, "one download per file, at the upstream's own path"
    for path in (
        "/cf/label/dev/linux-64/repodata.json",
        "/t/tk-1/cf/label/dev/noarch/repodata.json",
    ):
        listing = httpx.get(proxy.url + path)
        assert listing.status_code == 200 and listing.json()["info"]["subdir"] in path, path


def test_upstream_redirects_304s_without_etag_and_gzipped_json(
    upstream: Upstream, channel: Path, tmp_path: Path
) -> None:
    """anaconda.org answers packages with a 302 to another host; small channels revalidate
    with a bare 304; servers gzip JSON whatever the proxy asked."""
    cdn = Upstream(channel).start()
    config = write_config(
        tmp_path / "p.toml", tmp_path / "cache", {"cf": {"upstream": upstream.url}}, ttl=1
    )
    proxy = Proxy(config).start()
    try:
        upstream.reset()
        name = "linux-64/libzlib-1.3-h0.tar.bz2"
        upstream.override(f"/{name}", status=302, headers={"location": f"{cdn.url}/{name}"})
        moved = httpx.get(f"{proxy.url}/cf/{name}")
        assert moved.status_code == 200 and moved.content == (channel / name).read_bytes()
        assert cdn.count("GET", f"/{name}") == 1

        document = (channel / "noarch" / "repodata.json").read_bytes()
        upstream.override("/noarch/repodata.json.zst", b"", status=404)
        upstream.override(
            "/noarch/repodata.json",
            gzip.compress(document),
            headers={"content-encoding": "gzip", "content-type": "application/json"},
        )
        plain = httpx.get(
            f"{proxy.url}/cf/noarch/repodata.json", headers={"accept-encoding": "identity"}
        )
        assert (
            plain.status_code == 200
            and plain.json() == httpx.Response(200, content=document).json()
        )
        etag = plain.headers["etag"]

        upstream.override("/noarch/repodata.json", b"", status=304)  # no ETag, no dates
        time.sleep(1.2)  # past the 1 s ttl: the next request revalidates
        again = httpx.get(
            f"{proxy.url}/cf/noarch/repodata.json", headers={"accept-encoding": "identity"}
        )
        assert again.status_code == 200 and again.headers["x-cache"] == "REVALIDATED"
        assert again.headers["etag"] == etag and again.content == plain.content
    finally:
        proxy.stop()
        cdn.stop()
        upstream.reset()
