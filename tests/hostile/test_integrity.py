"""Nothing unverified is kept, and no client can poison another.

Attacks from the upstream (tampered, short, long or broken-off package bodies; repodata and
shard indexes that are not what they claim) and from clients (an X-Expected-Sha256 that
contradicts the channel, or is malformed, or is wrong for a file no record lists). Real
processes: the test upstream (tests/support/upstream_server.py) and `condaproxy serve`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import pytest
import zstandard

from tests.support.hostile import (
    Got,
    all_workers_started,
    get_all,
    get_one,
    http,
    listed_channel,
    no_crash_in_log,
    wait_for,
)
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

MiB = 1 << 20
BIG = "linux-64/big-1.0-0.conda"  # listed, 4 MiB of random bytes
SMALL = "linux-64/small-1.0-0.conda"  # listed
REMOVED = "linux-64/removed-1.0-0.conda"  # served upstream, in no record
STRAY = "osx-arm64/stray-1.0-0.conda"  # a subdir with no repodata upstream at all
SHARDED_PACKAGES = (
    "linux-64/datatool-1.0-h2.conda",
    "linux-64/libcore-2.1-h1.tar.bz2",
    "noarch/pyutil-0.4-pyh0.conda",
)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, bytes]:
    return {
        BIG: os.urandom(4 * MiB),
        SMALL: os.urandom(300 * 1024),
        REMOVED: os.urandom(3 * MiB),
        STRAY: os.urandom(3 * MiB),
    }


@pytest.fixture
def plain(tmp_path: Path, files: dict[str, bytes]) -> Iterator[Upstream]:
    """A channel without shards whose records are written by hand."""
    listed = {k: files[k] for k in (BIG, SMALL)}
    unlisted = {k: files[k] for k in (REMOVED, STRAY)}
    server = Upstream(listed_channel(tmp_path / "plain", listed, unlisted)).start()
    yield server
    server.stop()


@pytest.fixture
def sharded(tmp_path: Path, channel_dir: Path, files: dict[str, bytes]) -> Iterator[Upstream]:
    """The real sharded channel, plus a file that neither its shards nor its repodata list."""
    directory = tmp_path / "sharded"
    shutil.copytree(channel_dir, directory)
    (directory / REMOVED).write_bytes(files[REMOVED])
    server = Upstream(directory).start()
    yield server
    server.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with http() as made:
        yield made


def kept(cache: Path, data: bytes) -> bool:
    return any((cache / "blobs").rglob(sha(data)))


def leftovers(cache: Path) -> list[Path]:
    return list((cache / "tmp").iterdir()) if (cache / "tmp").exists() else []


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def claim(value: str | None) -> dict[str, str] | None:
    return {"x-expected-sha256": value} if value is not None else None


# A package is verified before its bytes go out, whatever the cache already holds.


def test_cold_package_get_reads_its_shard_never_the_whole_repodata(
    sharded, start_proxy, channel_dir: Path
) -> None:
    proxy = start_proxy({"ch": {"upstream": sharded.url}})
    for subdir in ("linux-64", "noarch"):
        # A repodata fetch would hang for 10 s: the record must come from the shard.
        for name in ("repodata.json", "repodata.json.zst"):
            sharded.override(f"/{subdir}/{name}", b"{}", delay=10)
    for package in SHARDED_PACKAGES:
        got = get_one(f"{proxy.url}/ch/{package}", timeout=8)
        assert (got.status, got.complete) == (200, True), package
        assert got.body == (channel_dir / package).read_bytes(), package
        assert got.headers["etag"] == f'"{sha(got.body)}"', package
    for subdir in ("linux-64", "noarch"):
        for name in ("repodata.json", "repodata.json.zst", "repodata.json.bz2"):
            assert sharded.count("GET", f"/{subdir}/{name}") == 0, name
            assert sharded.count("HEAD", f"/{subdir}/{name}") == 0, name
        assert sharded.count("GET", f"/{subdir}/repodata_shards.msgpack.zst") == 1


TAMPERINGS = {
    "first-bytes-flipped": lambda data: bytes(b ^ 0xFF for b in data[:64]) + data[64:],
    "last-byte-flipped": lambda data: data[:-1] + bytes([data[-1] ^ 1]),
    "one-byte-longer": lambda data: data + b"\0",
    "one-byte-shorter": lambda data: data[:-1],
}


@pytest.mark.parametrize("tamper", list(TAMPERINGS))
def test_tampered_package_is_never_served_whole_nor_kept_even_on_a_cold_cache(
    plain, sharded, start_proxy, tmp_path: Path, channel_dir: Path, files, tamper: str
) -> None:
    cache = tmp_path / "cache"
    proxy = start_proxy(
        {"plain": {"upstream": plain.url}, "sharded": {"upstream": sharded.url}}, cache=cache
    )
    genuine = {"plain": files[BIG], "sharded": (channel_dir / SHARDED_PACKAGES[0]).read_bytes()}
    paths = {"plain": BIG, "sharded": SHARDED_PACKAGES[0]}
    for channel, upstream in (("plain", plain), ("sharded", sharded)):
        good, path = genuine[channel], paths[channel]
        tampered = TAMPERINGS[tamper](good)
        upstream.override(f"/{path}", tampered)
        # No metadata is cached yet: the record is fetched before the first byte goes out.
        for got in get_all(f"{proxy.url}/{channel}/{path}", [None] * 3, timeout=10):
            if got.status == 200:
                assert not got.complete and len(got.body) < len(good), f"{channel}: went out"
            else:
                assert got.status == 502 and "upstream" in json.loads(got.body), channel
        assert not kept(cache, tampered) and not kept(cache, good), channel
        wait_for(lambda: not leftovers(cache), 5, "temp files removed")
        upstream.reset()
        again = get_one(f"{proxy.url}/{channel}/{path}")
        assert (again.status, again.headers["x-cache"], again.body) == (200, "MISS", good)
    no_crash_in_log(proxy.log())


# Files no record lists: served, never cached, checked against the client's own claim.

UNLISTED = {
    "removed-build": ("plain", REMOVED),
    "removed-build-in-a-sharded-channel": ("sharded", REMOVED),
    "subdir-without-repodata": ("plain", STRAY),
}


def test_unlisted_file_is_served_never_cached_and_checked_against_the_client_claim(
    plain, sharded, start_proxy, tmp_path: Path, files
) -> None:
    cache = tmp_path / "cache"
    upstreams = {"plain": plain, "sharded": sharded}
    proxy = start_proxy({name: {"upstream": u.url} for name, u in upstreams.items()}, cache=cache)
    for case, (channel, package) in UNLISTED.items():
        data, url = files[package], f"{proxy.url}/{channel}/{package}"
        anyone = get_one(url)
        right = get_one(url, claim(sha(data).upper()))
        wrong = get_one(url, claim(sha(b"something else")))
        for got in (anyone, right):
            assert (got.status, got.complete, got.body) == (200, True, data), case
            assert got.headers["x-cache"] == "MISS", case
        assert wrong.status == 200 and not wrong.complete, f"{case}: refused body went out"
        assert len(wrong.body) < len(data), case
        assert upstreams[channel].count("GET", f"/{package}") == 3, f"{case}: cached"
        assert not kept(cache, data), case
    wait_for(lambda: not leftovers(cache), 5, "temp files removed")
    no_crash_in_log(proxy.log())


@pytest.mark.parametrize("workers", [1, 2])
def test_one_client_wrong_claim_aborts_only_that_client(
    plain, start_proxy, files, workers: int
) -> None:
    proxy = all_workers_started(
        start_proxy({"ch": {"upstream": plain.url}}, workers=workers), workers
    )
    data = files[REMOVED]
    # The body waits 0.5 s: every client joins the one download before a byte of it arrives.
    plain.override(f"/{REMOVED}", data, delay=0.5)
    claims = [None, None, sha(data), sha(data).upper(), sha(b"poison"), sha(b"poison")]
    got = get_all(f"{proxy.url}/ch/{REMOVED}", [claim(c) for c in claims], timeout=15)
    for each in got[:4]:
        assert (each.status, each.complete, each.sha256) == (200, True, sha(data))
    for each in got[4:]:
        assert each.status == 200 and not each.complete and len(each.body) < len(data)
    if workers == 1:
        assert plain.count("GET", f"/{REMOVED}") == 1, "the clients shared one download"
        assert sorted(g.headers["x-cache"] for g in got).count("MISS") == 1
    no_crash_in_log(proxy.log())


# Claims that contradict what the channel publishes are refused outright.


def assert_409(got: Got, published: str, claimed: str) -> None:
    assert got.status == 409 and got.headers["content-type"] == "application/json"
    body = json.loads(got.body)
    assert body["status"] == 409 and body["published_sha256"] == published
    assert published in body["error"] and claimed in body["error"]


def test_claim_contradicting_the_channel_record_is_409_naming_the_published_sha256(
    plain, start_proxy, files
) -> None:
    proxy = start_proxy({"ch": {"upstream": plain.url}})
    url, published, poison = f"{proxy.url}/ch/{BIG}", sha(files[BIG]), sha(b"poison")

    # cold: refused from the record alone, nothing fetched
    assert_409(get_one(url, claim(poison)), published, poison)
    assert plain.count("GET", f"/{BIG}") == 0, "nothing was fetched for a refused claim"

    # in flight: a client is downloading the file when the poisoned claim comes
    plain.override(f"/{BIG}", files[BIG], delay=0.5)
    first: list[Got] = []
    thread = threading.Thread(target=lambda: first.append(get_one(url)))
    thread.start()
    wait_for(lambda: plain.count("GET", f"/{BIG}") == 1, 5, "download started")
    assert_409(get_one(url, claim(poison)), published, poison)
    thread.join(10)
    assert [(g.status, g.complete, g.body) for g in first] == [(200, True, files[BIG])]

    # cached: a hit is refused the same way
    assert get_one(url).headers["x-cache"] == "HIT"
    assert_409(get_one(url, claim(poison)), published, poison)

    # The refusals poisoned nothing: the right claim (any case) gets the file.
    right = get_one(url, claim(published.upper()))
    assert (right.status, right.complete, right.body) == (200, True, files[BIG])


MALFORMED = {
    "empty": "",
    "short": "ab" * 31,
    "long": "ab" * 33,
    "not-hex": "zz" * 32,
    "prefixed": "sha256:" + "ab" * 32,
    "md5-length": "ab" * 16,
    "two-values": "ab" * 32 + ", " + "cd" * 32,
}


def test_malformed_expected_sha256_is_400(plain, start_proxy, client, files) -> None:
    proxy = start_proxy({"ch": {"upstream": plain.url}})
    assert client.get(f"{proxy.url}/ch/{SMALL}").content == files[SMALL]  # one cached
    for case, value in MALFORMED.items():
        for package in (SMALL, BIG, REMOVED):  # a hit, a listed miss, an unlisted file
            response = client.get(f"{proxy.url}/ch/{package}", headers=claim(value))
            assert response.status_code == 400, (case, package)
            assert "X-Expected-Sha256" in response.json()["error"], (case, package)
    assert plain.count("GET", f"/{BIG}") == 0 and plain.count("GET", f"/{REMOVED}") == 0


# An upstream body that breaks off while the proxy is writing.


def test_body_broken_off_mid_write_aborts_keeps_nothing_and_logs_no_crash(
    plain, start_proxy, client, tmp_path: Path, files
) -> None:
    cache = tmp_path / "cache"
    proxy = start_proxy({"ch": {"upstream": plain.url}}, cache=cache)
    url = f"{proxy.url}/ch/{BIG}"
    assert client.get(f"{proxy.url}/ch/linux-64/repodata.json").status_code == 200
    for break_after in (1, MiB - 1, MiB + 1, 3 * MiB + 12345):
        plain.override(f"/{BIG}", files[BIG], break_after=break_after)
        for _ in range(3):
            for got in get_all(url, [None, None], timeout=10):
                assert got.status == 200 and not got.complete, break_after
                assert len(got.body) < len(files[BIG]), break_after
            wait_for(lambda: not leftovers(cache), 5, "temp files removed")
    assert not kept(cache, files[BIG])
    events = [e for e in proxy.events() if e.get("event") == "download failed"]
    assert len(events) >= 12 and all("broken off" in str(e.get("error")) for e in events)
    no_crash_in_log(proxy.log())
    plain.reset()
    assert get_one(url).body == files[BIG]
    assert client.head(url).headers["x-cache"] == "HIT"


# Upstream metadata that is not what it claims never replaces a good snapshot.


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


GOOD = b'{"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": {}}'
HOSTILE_JSON = {
    "not-json": b"{this is not json",
    "truncated": GOOD[:-9],
    "no-package-maps": b'{"info": {"subdir": "linux-64"}, "repodata_version": 1}',
    "array": b"[]",
    "null": b"null",
    "string": b'"packages"',
    "packages-array": b'{"packages": [], "packages.conda": {}}',
    "packages-conda-string": b'{"packages": {}, "packages.conda": "x"}',
    "packages-null": b'{"packages": null}',
    "info-not-object": b'{"info": [], "packages": {}}',
    "other-subdir": b'{"info": {"subdir": "osx-64"}, "packages": {}, "packages.conda": {}}',
    "empty": b"",
    "binary": os.urandom(512),
}
HOSTILE_ZST = {
    "not-zstd": b"{this is not zstd at all}",
    "zstd-magic-then-garbage": b"\x28\xb5\x2f\xfd" + os.urandom(200),
    "zstd-truncated": zstd(GOOD * 50)[:40],
    "zstd-of-garbage": zstd(b"{this is not json"),
    "zstd-of-nothing": zstd(b""),
    "zstd-of-other-subdir": zstd(HOSTILE_JSON["other-subdir"]),
    "zstd-of-array": zstd(b"[]"),
}
VARIANTS = ("repodata.json", "repodata.json.zst", "repodata.json.bz2", "current_repodata.json")


def shard_index(document: object) -> bytes:
    return zstd(msgpack.packb(document, use_bin_type=True))


INFO = {"subdir": "linux-64", "base_url": "./", "shards_base_url": "./shards/"}
HOSTILE_SHARD_INDEX = {
    "index-not-zstd": b"not zstd",
    "index-zstd-not-msgpack": zstd(b"\xc1\xc1\xc1"),
    "index-msgpack-trailing-garbage": zstd(msgpack.packb({"shards": {}}) + b"\xc1"),
    "index-not-a-map": shard_index([1, 2, 3]),
    "index-no-shards": shard_index({"version": 1, "info": INFO}),
    "index-shards-array": shard_index({"version": 1, "info": INFO, "shards": []}),
    "index-digest-31-bytes": shard_index({"info": INFO, "shards": {"datatool": b"\1" * 31}}),
    "index-digest-hex-string": shard_index({"info": INFO, "shards": {"datatool": "ab" * 32}}),
    "index-digest-int": shard_index({"info": INFO, "shards": {"datatool": 7}}),
    "index-name-not-a-string": shard_index({"info": INFO, "shards": {7: b"\1" * 32}}),
    "index-info-not-a-map": shard_index({"info": [INFO], "shards": {"datatool": b"\1" * 32}}),
    # 2.5 MB that decode to 2.5 million lists (~160 MiB) in a key nobody reads
    "index-item-bomb": shard_index(
        {"info": INFO, "shards": {"datatool": b"\1" * 32}, "future": [[]] * 2_500_000}
    ),
}


class Metadata:
    """One sharded upstream and one proxy (ttl 0: every request revalidates) for all metadata
    cases; each case and phase owns a label, so overrides never meet."""

    def __init__(self, upstream: Upstream, proxy: Proxy, client: httpx.Client) -> None:
        self.upstream, self.proxy, self.client = upstream, proxy, client

    def get(self, label: str, path: str) -> httpx.Response:
        return self.client.get(f"{self.proxy.url}/ch/label/{label}/{path}")


@pytest.fixture(scope="module")
def metadata(tmp_path_factory: pytest.TempPathFactory, channel_dir: Path) -> Iterator[Metadata]:
    base = tmp_path_factory.mktemp("metadata")
    cases = [*HOSTILE_JSON, *HOSTILE_ZST, *HOSTILE_SHARD_INDEX]
    for case in cases:
        for phase in ("cold", "warm"):
            shutil.copytree(channel_dir, base / "upstream" / "label" / f"{phase}-{case}")
    upstream = Upstream(base / "upstream").start()
    config = write_config(
        base / "proxy.toml", base / "cache", {"ch": {"upstream": upstream.url}}, 0
    )
    proxy = Proxy(config).start()
    with http() as client:
        yield Metadata(upstream, proxy, client)
    proxy.stop()
    upstream.stop()
    no_crash_in_log(proxy.log())


def assert_502_naming(response: httpx.Response, upstream_path: str, upstream: Upstream) -> None:
    assert response.status_code == 502, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == 502 and body["upstream"] == upstream.url + upstream_path
    assert upstream.url + upstream_path in body["error"]


def assert_stale(response: httpx.Response, good: bytes) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["x-cache"] == "STALE"
    assert response.headers["warning"].startswith("110 ")
    assert response.content == good


@pytest.mark.parametrize("case", [*HOSTILE_JSON, *HOSTILE_ZST])
def test_hostile_repodata_never_replaces_a_good_snapshot(metadata: Metadata, case: str) -> None:
    upstream = metadata.upstream
    hostile_zst = case in HOSTILE_ZST
    body = HOSTILE_ZST[case] if hostile_zst else HOSTILE_JSON[case]
    hostile_name = "repodata.json.zst" if hostile_zst else "repodata.json"

    def arm(label: str) -> str:
        if not hostile_zst:  # the .json is what the proxy fetches when there is no .zst
            upstream.override(f"/label/{label}/linux-64/repodata.json.zst", status=404)
        return f"/label/{label}/linux-64/{hostile_name}"

    # Without a copy: a 502 naming the upstream, for every variant, every time.
    cold = arm(f"cold-{case}")
    upstream.override(cold, body)
    for variant in VARIANTS:
        assert_502_naming(metadata.get(f"cold-{case}", f"linux-64/{variant}"), cold, upstream)

    # With a good copy: the copy, stale, for every variant; the snapshot survives the attack.
    warm = arm(f"warm-{case}")
    good = {v: metadata.get(f"warm-{case}", f"linux-64/{v}") for v in VARIANTS}
    assert all(r.status_code == 200 for r in good.values())
    assert json.loads(good["repodata.json"].content)["packages.conda"], "the real repodata"
    upstream.override(warm, body)
    for variant in VARIANTS:
        assert_stale(metadata.get(f"warm-{case}", f"linux-64/{variant}"), good[variant].content)
    # ... and packages are still checked against it.
    package = metadata.get(f"warm-{case}", "linux-64/datatool-1.0-h2.conda")
    assert package.status_code == 200 and package.headers["x-cache"] == "MISS"


@pytest.mark.parametrize("case", list(HOSTILE_SHARD_INDEX))
def test_hostile_shard_index_never_replaces_a_good_one(metadata: Metadata, case: str) -> None:
    upstream, body = metadata.upstream, HOSTILE_SHARD_INDEX[case]
    index = "linux-64/repodata_shards.msgpack.zst"

    # Without a copy: "no shards" (404; rattler aborts on a 5xx), naming the upstream; packages
    # are then checked against repodata.json instead.
    upstream.override(f"/label/cold-{case}/{index}", body)
    response = metadata.get(f"cold-{case}", index)
    assert response.status_code == 404 and response.headers["content-type"] == "application/json"
    assert f"{upstream.url}/label/cold-{case}/{index}" in response.json()["error"]
    package = metadata.get(f"cold-{case}", "linux-64/datatool-1.0-h2.conda")
    assert package.status_code == 200 and package.headers["x-cache"] == "MISS"
    assert upstream.count("GET", f"/label/cold-{case}/linux-64/repodata.json.zst") == 1

    # With a good copy: the copy, stale.
    good = metadata.get(f"warm-{case}", index)
    assert good.status_code == 200
    upstream.override(f"/label/warm-{case}/{index}", body)
    assert_stale(metadata.get(f"warm-{case}", index), good.content)
    package = metadata.get(f"warm-{case}", "linux-64/libzlib-1.3-h0.conda")
    assert package.status_code == 200 and package.headers["x-cache"] == "MISS"
    assert upstream.count("GET", f"/label/warm-{case}/linux-64/repodata.json.zst") == 0
