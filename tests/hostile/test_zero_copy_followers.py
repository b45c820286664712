"""Clients joining a cold download get the bytes already on disk by sendfile (web/zerocopy.py,
cache/tails.py Segments), in the worker running the download and in the other worker, which
follows it through its temp file. Against a real proxy with 2 workers and an upstream that
sends slowly enough for every client to join midway: each gets exactly the published bytes,
and the last byte only once they are verified (a corrupt upstream body reaches no client
whole)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

from tests.support.hostile import get_all, listed_channel, no_crash_in_log
from tests.support.processes import Proxy, Upstream, write_config

pytestmark = pytest.mark.integration

SIZE = 6 << 20
FILES = {f"linux-64/joined{i}-1.0-0.conda": os.urandom(SIZE) for i in range(3)}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, Upstream]]:
    base = tmp_path_factory.mktemp("zero-copy-followers")
    upstream = Upstream(listed_channel(base / "channel", FILES)).start()
    config = write_config(base / "proxy.toml", base / "cache", {"cf": {"upstream": upstream.url}})
    started = Proxy(config, workers=2).start()
    yield started, upstream
    started.stop()
    upstream.stop()
    no_crash_in_log(started.log())


@pytest.mark.parametrize(("index", "clients"), [(0, 12), (1, 24)])
def test_every_joined_client_gets_the_published_bytes(proxy, index, clients):
    started, upstream = proxy
    path, data = list(FILES.items())[index]
    upstream.mode("rate:8")  # 1 MiB every 1/8 s: the download takes ~0.75 s
    try:
        got = get_all(f"{started.url}/cf/{path}", [None] * clients)
    finally:
        upstream.mode("ok")
    assert [(g.status, g.complete) for g in got] == [(200, True)] * clients
    digest = hashlib.sha256(data).hexdigest()
    assert all(hashlib.sha256(g.body).hexdigest() == digest for g in got)
    assert upstream.count("GET", f"/{path}") == 1  # one download, every client joined it


def test_a_corrupt_body_reaches_no_joined_client_whole(proxy):
    started, upstream = proxy
    path = list(FILES)[2]
    upstream.mode("corrupt")
    try:
        got = get_all(f"{started.url}/cf/{path}", [None] * 12)
    finally:
        upstream.mode("ok")
    for g in got:  # cut short (or a 502 before any byte): never the whole, wrong body
        assert not g.complete or g.status != 200, g.status
        assert len(g.body) < SIZE
