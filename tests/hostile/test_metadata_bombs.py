"""Bounded memory against hostile upstream metadata: decompression bombs.

A 32 KB `repodata.json.zst` that inflates to 1 GiB; a `repodata.json` sent with a content coding
(gzip, deflate, zstd) that does the same; a shard index and a package's shard that are zstd
bombs. Each is refused as an upstream error once it passes its limit (the stale copy is served
if there is one, else an error naming the limit), while /healthz keeps answering within 50 ms
and the proxy's resident memory stays far below the bomb's size. One proxy runs with
`max_repodata_size = "64MiB"` for the whole class, one with the default (768 MiB) for the
1 GiB bombs that matter most.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgpack
import pytest
import zstandard

from condaproxy.rules.codecs import PIECE, TooLarge, decode_content
from tests.support.hostile import HealthProbe, http, no_crash_in_log, tree_memory
from tests.support.processes import Proxy, Upstream, write_config

MiB = 1 << 20
BOMB = 1 << 30  # what each bomb inflates to
CAP = 4 * MiB  # what a test reads of any answer
GROWTH = 400 * MiB  # what the proxy's processes may grow by, at their peak, through it all
HEAD = b'{"info": {"subdir": "linux-64"}, "repodata_version": 1, "packages": {'
TAIL = b'}, "packages.conda": {}}'
PACKAGE = "linux-64/datatool-1.0-h2.conda"


def zstd_bomb(head: bytes = HEAD, filler: bytes = b" ", tail: bytes = TAIL) -> bytes:
    """One zstd frame: head, BOMB bytes of `filler`, tail (32 KB for 1 GiB)."""
    out: list[bytes] = []
    chunker = zstandard.ZstdCompressor(level=3).chunker(chunk_size=1 << 16)
    out.extend(chunker.compress(head))
    block = filler * MiB
    for _ in range(BOMB // MiB):
        out.extend(chunker.compress(block))
    out.extend(chunker.compress(tail))
    out.extend(chunker.finish())
    return b"".join(out)


def deflate_bomb(head: bytes = HEAD, tail: bytes = TAIL) -> bytes:
    """Raw deflate (RFC 1951) of head, BOMB spaces, tail (1 MB for 1 GiB). After a full flush
    deflate starts afresh on a byte boundary, so one compressed MiB of spaces can be repeated."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(b" " * MiB) + deflate.flush(zlib.Z_FULL_FLUSH)
    return first + block * (BOMB // MiB) + deflate.compress(tail) + deflate.flush()


def gzip_bomb() -> bytes:
    """RFC 1952: the deflate bomb in a gzip member, with its true CRC and size."""
    spaces, crc = b" " * MiB, zlib.crc32(HEAD)
    for _ in range(BOMB // MiB):
        crc = zlib.crc32(spaces, crc)
    trailer = struct.pack("<II", zlib.crc32(TAIL, crc), (len(HEAD) + BOMB + len(TAIL)) % 2**32)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + deflate_bomb() + trailer


def msgpack_bomb(*keys: str) -> bytes:
    """zstd of msgpack {keys[0]: {keys[1]: ... a binary value of BOMB zero bytes}}."""
    head = b"".join(b"\x81" + msgpack.packb(key) for key in keys)
    return zstd_bomb(head + b"\xc6" + struct.pack(">I", BOMB), b"\0", b"")  # bin 32


ENCODE: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": lambda data: zlib.compress(data),  # RFC 9110: the zlib format
    "zstd": zstandard.ZstdCompressor().compress,
}


@dataclass(frozen=True)
class Bomb:
    path: str  # below the label: where the upstream serves it
    body: bytes
    coding: str | None = None  # its Content-Encoding

    @property
    def headers(self) -> dict[str, str]:
        return {"content-encoding": self.coding} if self.coding else {}


@pytest.fixture(scope="module")
def bombs() -> dict[str, Bomb]:
    zstd = zstd_bomb()
    made = {
        "repodata.json.zst": Bomb("linux-64/repodata.json.zst", zstd),
        "gzip-encoded repodata.json": Bomb("linux-64/repodata.json", gzip_bomb(), "gzip"),
        "raw-deflate-encoded repodata.json": Bomb(
            "linux-64/repodata.json", deflate_bomb(), "deflate"
        ),
        "zstd-encoded repodata.json": Bomb("linux-64/repodata.json", zstd, "zstd"),
        "shard index": Bomb(
            "linux-64/repodata_shards.msgpack.zst", msgpack_bomb("shards", "datatool")
        ),
    }
    assert all(len(bomb.body) < 2 * MiB for bomb in made.values()), "bombs are small bodies"
    return made


REPODATA = [
    "repodata.json.zst",
    "gzip-encoded repodata.json",
    "raw-deflate-encoded repodata.json",
    "zstd-encoded repodata.json",
]


@dataclass
class Bombed:
    upstream: Upstream
    strict: Proxy  # max_repodata_size = 64 MiB
    default: Proxy  # max_repodata_size = 768 MiB
    client: httpx.Client
    baseline: dict[int, int]  # resident bytes of each proxy's processes before any bomb

    def get(self, label: str, path: str, proxy: Proxy | None = None) -> httpx.Response:
        """The proxy's answer, read only up to CAP bytes: a proxy that let a bomb through must
        fail the test, not take the test runner's memory with it."""
        url = f"{(proxy or self.strict).url}/ch/label/{label}/{path}"
        body = b""
        with self.client.stream("GET", url) as response:
            for chunk in response.iter_raw():
                body += chunk
                assert len(body) <= CAP, f"{url}: more than {CAP} bytes: the bomb went through"
        return httpx.Response(response.status_code, headers=response.headers, content=body)

    def prepare(self, label: str, bomb: Bomb) -> None:
        if bomb.path.endswith("repodata.json"):  # fetched only when there is no .zst
            self.upstream.override(f"/label/{label}/{bomb.path}.zst", status=404)

    def detonate(self, label: str, bomb: Bomb) -> None:
        self.upstream.override(f"/label/{label}/{bomb.path}", bomb.body, headers=bomb.headers)


LABELS = [
    "shard",
    "default-0",
    "default-1",
    *(f"{p}-{i}" for p in ("cold", "warm") for i in range(5)),
]


@pytest.fixture(scope="module")
def bombed(tmp_path_factory: pytest.TempPathFactory, channel_dir: Path) -> Iterator[Bombed]:
    base = tmp_path_factory.mktemp("bombs")
    for label in LABELS:
        shutil.copytree(channel_dir, base / "upstream" / "label" / label)
    upstream = Upstream(base / "upstream").start()
    channels = {"ch": {"upstream": upstream.url}}
    # ttl 0: every request revalidates, so a cached copy meets the bomb on the next request.
    strict = write_config(
        base / "strict.toml", base / "strict", channels, 0, 'max_repodata_size = "64MiB"\n'
    )
    proxies = [Proxy(strict).start(), Proxy(write_config(base / "p.toml", base / "c", channels, 0))]
    proxies[1].start()
    baseline = {p.port: tree_memory(p.proc.pid)[0] for p in proxies if p.proc is not None}
    with http(60) as client:
        yield Bombed(upstream, proxies[0], proxies[1], client, baseline)
    for proxy in proxies:
        proxy.stop()
    upstream.stop()


def assert_responsive_and_bounded(bombed: Bombed, proxy: Proxy, probe: HealthProbe) -> None:
    assert len(probe.latencies) >= 2, "the probe ran through the attack"
    slowest, p99 = max(probe.latencies), probe.percentile(0.99)
    assert slowest < 0.150 and p99 < 0.050, f"/healthz: max {slowest:.3f} s, p99 {p99:.3f} s"
    assert proxy.proc is not None
    growth = tree_memory(proxy.proc.pid)[1] - bombed.baseline[proxy.port]
    assert growth < GROWTH, f"peak RSS grew by {growth >> 20} MiB"
    no_crash_in_log(proxy.log())


@pytest.mark.integration
@pytest.mark.parametrize("kind", REPODATA)
def test_repodata_bomb_is_refused_at_the_size_limit(bombed, bombs, kind: str) -> None:
    bomb, label = bombs[kind], REPODATA.index(kind)
    with HealthProbe(bombed.strict.url) as probe:
        # No copy yet: a 502 that names the limit.
        bombed.prepare(f"cold-{label}", bomb)
        bombed.detonate(f"cold-{label}", bomb)
        refused = bombed.get(f"cold-{label}", "linux-64/repodata.json")
        assert refused.status_code == 502, refused.text
        assert "max_repodata_size" in refused.json()["error"]
        assert refused.json()["upstream"] == f"{bombed.upstream.url}/label/cold-{label}/{bomb.path}"

        # A good copy (sent with the same content coding): served stale through the attack.
        warm = f"warm-{label}"
        bombed.prepare(warm, bomb)
        if bomb.coding:
            plain = (Path(bombed.upstream.directory) / "label" / warm / bomb.path).read_bytes()
            bombed.upstream.override(
                f"/label/{warm}/{bomb.path}", ENCODE[bomb.coding](plain), headers=bomb.headers
            )
        good = bombed.get(warm, "linux-64/repodata.json")
        assert good.status_code == 200 and good.json()["packages.conda"], good.text
        if bomb.coding:
            assert good.content == plain, "the content coding was undone"
        bombed.detonate(warm, bomb)
        stale = bombed.get(warm, "linux-64/repodata.json")
        assert (stale.status_code, stale.headers["x-cache"]) == (200, "STALE")
        assert stale.headers["warning"].startswith("110 ") and stale.content == good.content
    assert_responsive_and_bounded(bombed, bombed.strict, probe)


@pytest.mark.integration
@pytest.mark.parametrize("kind", REPODATA[:2])
def test_gigabyte_bomb_at_the_default_limit_keeps_memory_and_health(
    bombed, bombs, kind: str
) -> None:
    bomb, label = bombs[kind], f"default-{REPODATA.index(kind)}"
    with HealthProbe(bombed.default.url) as probe:
        bombed.prepare(label, bomb)
        bombed.detonate(label, bomb)
        refused = bombed.get(label, "linux-64/repodata.json", bombed.default)
        assert refused.status_code == 502, refused.text
        assert f"more than {768 * MiB} bytes (cache.max_repodata_size)" in refused.json()["error"]
    assert_responsive_and_bounded(bombed, bombed.default, probe)


@pytest.mark.integration
def test_shard_index_bomb_is_refused_and_packages_still_verified(bombed, bombs) -> None:
    bomb, index = bombs["shard index"], "linux-64/repodata_shards.msgpack.zst"
    with HealthProbe(bombed.strict.url) as probe:
        # No copy yet: "no shards" (a 5xx would abort rattler's solve), and packages are
        # checked against repodata.json instead.
        bombed.detonate("cold-4", bomb)
        refused = bombed.get("cold-4", index)
        assert refused.status_code == 404 and "more than" in refused.json()["error"]
        package = bombed.get("cold-4", PACKAGE)
        assert (package.status_code, package.headers["x-cache"]) == (200, "MISS")
        assert package.headers["etag"] == f'"{hashlib.sha256(package.content).hexdigest()}"'

        good = bombed.get("warm-4", index)
        assert good.status_code == 200
        bombed.detonate("warm-4", bomb)
        stale = bombed.get("warm-4", index)
        assert (stale.status_code, stale.headers["x-cache"]) == (200, "STALE")
        assert stale.content == good.content
    assert_responsive_and_bounded(bombed, bombed.strict, probe)


@pytest.mark.integration
def test_shard_bomb_named_by_its_own_hash_is_refused(bombed) -> None:
    """A hostile index can name a bomb by its true sha256: the shard passes the name check,
    and must still not be inflated past its limit."""
    shard = msgpack_bomb("packages.conda", "datatool-1.0-h2.conda")
    digest = hashlib.sha256(shard).hexdigest()
    info = {"subdir": "linux-64", "base_url": "./", "shards_base_url": "./shards/"}
    index = {"version": 1, "info": info, "shards": {"datatool": bytes.fromhex(digest)}}
    packed = zstandard.ZstdCompressor().compress(msgpack.packb(index, use_bin_type=True))
    upstream = bombed.upstream
    upstream.override("/label/shard/linux-64/repodata_shards.msgpack.zst", packed)
    upstream.override(f"/label/shard/linux-64/shards/{digest}.msgpack.zst", shard)
    with HealthProbe(bombed.strict.url) as probe:
        package = bombed.get("shard", PACKAGE)
        assert package.status_code == 502 and "more than" in package.json()["error"]
    assert_responsive_and_bounded(bombed, bombed.strict, probe)


# The rule itself, in-process: every decoder stops at its limit and hands out bounded pieces.


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "deflate", "raw-deflate", "zstd"])
def test_every_content_coding_is_decoded_within_its_limit(coding: str) -> None:
    document = HEAD + b" " * (3 * MiB) + TAIL
    if coding == "raw-deflate":
        squeeze = zlib.compressobj(6, zlib.DEFLATED, -15)
        body, coding = squeeze.compress(document) + squeeze.flush(), "deflate"
    else:
        body = ENCODE[coding.removeprefix("x-")](document)
    pieces = list(decode_content(io.BytesIO(body), coding, len(document)))
    assert b"".join(pieces) == document and max(map(len, pieces)) <= PIECE
    with pytest.raises(TooLarge):
        for piece in decode_content(io.BytesIO(body), coding, len(document) - 1):
            assert len(piece) <= PIECE


BROKEN = {
    "unsupported-coding": ("br", b"\x0b\x00\x80"),
    "not-gzip": ("gzip", b"not gzip"),
    "gzip-cut-short": ("gzip", gzip.compress(b"x" * 1000)[:15]),
    "gzip-empty": ("gzip", b""),
    "deflate-garbage": ("deflate", b"\x78\x9c" + b"\xff" * 64),
    "not-zstd": ("zstd", b"not zstd at all"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_unknown_or_broken_content_coding_is_refused(case: str) -> None:
    coding, body = BROKEN[case]
    with pytest.raises(ValueError):
        b"".join(decode_content(io.BytesIO(body), coding, MiB))
