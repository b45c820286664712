"""The bounded cache: least recently used blobs go, uploads and recently used files stay, and
the store ends within max_size plus at most one file."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package
from tests.support.processes import Upstream

pytestmark = pytest.mark.integration

FILE = 200 * 1024
LIMIT = 700 * 1024
ADMIN = "admin-token-123"
TOKENS = {"ops": {"token": ADMIN, "roles": {"*": "admin"}}}


@pytest.fixture
def big_files(tmp_path: Path):
    directory = tmp_path / "big"
    (directory / "noarch").mkdir(parents=True)
    names = [f"blob{i}-1.0-0.conda" for i in range(6)]
    records = {}
    for name in names:
        data = os.urandom(FILE)
        (directory / "noarch" / name).write_bytes(data)
        records[name] = {
            "name": name.split("-")[0],
            "version": "1.0",
            "build": "0",
            "build_number": 0,
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": FILE,
        }
    # Only files the channel lists (with their checksums) are ever cached.
    repodata = {"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": records}
    (directory / "noarch" / "repodata.json").write_text(json.dumps(repodata))
    server = Upstream(directory).start()
    yield server, names
    server.stop()


def store_bytes(proxy) -> int:
    stats = httpx.get(f"{proxy.url}/api/cache/stats", headers={"x-api-key": ADMIN}).json()
    return stats["store"]["bytes"]


def wait_until(predicate, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "eviction did not run in time"
        time.sleep(0.05)


def test_least_recently_used_go_first_uploads_stay(big_files, start_proxy, tmp_path):
    upstream, names = big_files
    proxy = start_proxy(
        {"big": {"upstream": upstream.url}},
        tokens={**TOKENS, "ci": {"token": "ci-token-12345", "roles": {"big": "write"}}},
        extra=f"max_size = {LIMIT}\nmin_free = 1\n",
    )
    mine = build_package(
        Pkg("mine", "1.0", "h0", "noarch", payload_size=FILE), tmp_path / "w", tmp_path / "o"
    )
    assert (
        httpx.post(
            f"{proxy.url}/api/channels/big/upload/{mine.name}",
            content=mine.read_bytes(),
            headers={"x-api-key": "ci-token-12345"},
        ).status_code
        == 201
    )
    url = f"{proxy.url}/big/noarch/"
    for name in names:
        assert httpx.get(url + name).status_code == 200
        # blob0 is used after every new file: it stays the most recently used.
        assert httpx.get(url + names[0]).status_code == 200
        wait_until(lambda: store_bytes(proxy) <= LIMIT)
    assert store_bytes(proxy) <= LIMIT + FILE
    stats = httpx.get(f"{proxy.url}/api/cache/stats", headers={"x-api-key": ADMIN}).json()
    assert stats["channels"]["big"]["files"] == 3
    # The three kept are the most recently used (a HEAD of an evicted file would refetch it).
    for name in (names[0], names[4], names[5]):
        assert httpx.head(url + name).headers["x-cache"] == "HIT", name
    # The upload was never a candidate.
    assert httpx.get(url + mine.name).content == mine.read_bytes()
    text = httpx.get(f"{proxy.url}/metrics").text
    assert "condaproxy_evictions_total" in text
