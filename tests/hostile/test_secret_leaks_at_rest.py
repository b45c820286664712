"""The cache directory holds no upstream credential. The index kept, in clear, each upstream
URL the proxy fetched metadata from (to revalidate it there), the absolute URLs a shard index
or CEP-15 `base_url` resolved to, and the record of which upstream filled the cache: path
token, `user:password@` and a lone `token@` included. The cache is a disposable volume (a
PVC, a host path, a backup, another tenant's `cache.path`), and a rotated credential stayed
on it for as long as the entry did. The index now keeps those URLs with the channel's base
in its masked form and puts the credentials of the day back when it fetches (rules/redact.py
kept_url/used_url): a rotated token finds its cache and revalidates with the new token.

Real processes: the test upstream serving the channel below `/t/<token>/`, the proxy in
front; every file under cache.path is searched for the secrets."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Upstream

pytestmark = pytest.mark.integration

TOKEN = "PathTokenKeptOnDisk6061"
NEW_TOKEN = "RotatedPathTokenOnDisk7172"
PASSWORD = "PasswordKeptOnDisk8283"
LONE = "LoneUserTokenOnDisk9394"
PKG = "linux-64/libzlib-1.3-h0.conda"
# Where the credential sits: the channel's keys, or the upstream URL itself.
FORMS = {
    "upstream-token": lambda host, token: {
        "upstream": f"http://{host}/ch",
        "upstream_token": token,
    },
    "token-in-the-url": lambda host, token: {"upstream": f"http://{host}/t/{token}/ch"},
    "password-in-the-url": lambda host, token: {
        "upstream": f"http://me:{PASSWORD}@{host}/t/{token}/ch"
    },
    "lone-user-in-the-url": lambda host, token: {"upstream": f"http://{LONE}@{host}/t/{token}/ch"},
}
FILES = [
    "linux-64/repodata.json",
    "noarch/repodata.json",
    "linux-64/repodata_shards.msgpack.zst",
    PKG,
]


@pytest.fixture
def home(tmp_path: Path, channel_dir: Path):  # type: ignore[no-untyped-def]
    for token in (TOKEN, NEW_TOKEN):
        shutil.copytree(channel_dir, tmp_path / "home" / "t" / token / "ch")
    server = Upstream(tmp_path / "home").start()
    yield server
    server.stop()


def secrets_on_disk(cache: Path) -> list[str]:
    found = []
    for path in cache.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [
                f"{s} in {path}" for s in (TOKEN, NEW_TOKEN, PASSWORD, LONE) if s.encode() in data
            ]
    return found


@pytest.mark.parametrize("form", list(FORMS))
def test_no_credential_is_written_to_the_cache(home, start_proxy, tmp_path, form) -> None:  # type: ignore[no-untyped-def]
    host = home.url.removeprefix("http://")
    cache = tmp_path / "cache"
    proxy = start_proxy({"ch": FORMS[form](host, TOKEN)}, ttl=0, cache=cache)
    with httpx.Client(timeout=30) as client:
        for name in FILES:
            assert client.get(f"{proxy.url}/ch/{name}").status_code == 200, name
    proxy.stop()  # everything written behind is on disk
    assert secrets_on_disk(cache) == []


@pytest.mark.parametrize("form", list(FORMS))
def test_a_rotated_credential_finds_its_cache(home, start_proxy, tmp_path, form) -> None:  # type: ignore[no-untyped-def]
    host = home.url.removeprefix("http://")
    cache = tmp_path / "cache"
    first = start_proxy({"ch": FORMS[form](host, TOKEN)}, ttl=0, cache=cache)
    expected = httpx.get(f"{first.url}/ch/{PKG}", timeout=30).content
    assert httpx.get(f"{first.url}/ch/linux-64/repodata.json", timeout=30).status_code == 200
    first.stop()
    home.reset()
    second = start_proxy({"ch": FORMS[form](host, NEW_TOKEN)}, ttl=0, cache=cache)
    package = httpx.get(f"{second.url}/ch/{PKG}", timeout=30)
    assert package.content == expected and package.headers["x-cache"] == "HIT"
    repodata = httpx.get(f"{second.url}/ch/linux-64/repodata.json", timeout=30)
    assert repodata.status_code == 200
    asked = [s["path"] for s in home.seen()]
    assert asked, "the metadata was revalidated upstream"
    assert all(f"/t/{NEW_TOKEN}/" in path for path in asked), asked  # with the new token only
    assert repodata.headers.get("x-cache") in ("REVALIDATED", "HIT", "MISS")
