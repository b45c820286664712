"""Dependency confusion through a label: the team uploads `ours 1.0`; an attacker publishes
`ours 99.0` upstream under a label (`label/main`, which anaconda.org serves as the channel
itself, or `label/dev`). Uploads live at the channel root, so a label's views hold none of
them, but a client of `team/label/main` (or of `team` and `team/label/dev` together, with
flexible priority) must not solve to, or download, the impostor: the uploaded name hides the
upstream's records under every label as at the root, on every route. Real upstream, real
proxy, py-rattler solving through repodata.json and through shards."""

from __future__ import annotations

import bz2
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import pytest

from condaproxy.rules.codecs import zstd_decompress
from tests.support.channel import Pkg, build_package, index_channel
from tests.support.clients import rattler_install
from tests.support.processes import Proxy, Upstream, write_config

WRITE = "ci-write-token-1"
IMPOSTOR = Pkg("ours", "99.0", "0", "linux-64")
OTHER = Pkg("other", "1.0", "h0", "linux-64")
LABELS = ("main", "dev")


def _json(data: bytes) -> dict:
    return json.loads(data)


def _zst(data: bytes) -> dict:
    return json.loads(zstd_decompress(data, 1 << 30))


def _bz2(data: bytes) -> dict:
    return json.loads(bz2.decompress(data))


# Every repodata variant a client may read for a label's subdir.
VARIANTS = {
    "repodata.json": _json,
    "repodata.json.zst": _zst,
    "repodata.json.bz2": _bz2,
    "current_repodata.json": _json,
}


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, Upstream, Path]]:
    base = tmp_path_factory.mktemp("labels")
    channel, work = base / "channel", base / "work"
    build_package(OTHER, work, channel)
    build_package(IMPOSTOR, work, channel)
    index_channel(channel)
    for label in LABELS:  # the same channel, impostor included, under each label
        shutil.copytree(channel, channel / "label" / label, ignore=shutil.ignore_patterns("label"))
    upstream = Upstream(channel).start()
    config = write_config(
        base / "proxy.toml",
        base / "cache",
        {"team": {"upstream": upstream.url}},
        tokens={"ci": {"token": WRITE, "roles": {"team": "write"}}},
    )
    proxy = Proxy(config).start()
    mine = build_package(Pkg("ours", "1.0", "h0", "linux-64"), work, base / "mine")
    answer = httpx.post(
        f"{proxy.url}/api/channels/team/upload/{mine.name}",
        content=mine.read_bytes(),
        headers={"x-api-key": WRITE},
        timeout=60,
    )
    assert answer.status_code == 201, answer.text
    yield proxy, upstream, base
    proxy.stop()
    upstream.stop()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("label", LABELS)
def test_an_impostor_under_a_label_is_hidden_in_every_repodata_variant(team, label, variant):
    proxy, _, _ = team
    got = httpx.get(f"{proxy.url}/team/label/{label}/linux-64/{variant}", timeout=30)
    assert got.status_code == 200, got.text
    listed = VARIANTS[variant](got.content)
    assert IMPOSTOR.filename not in listed["packages.conda"]
    assert OTHER.filename in listed["packages.conda"]  # the label still shows the rest


@pytest.mark.parametrize("label", LABELS)
def test_an_impostor_under_a_label_is_hidden_from_the_shard_index_and_its_shard(team, label):
    proxy, upstream, _ = team
    index = f"label/{label}/linux-64/repodata_shards.msgpack.zst"
    got = httpx.get(f"{proxy.url}/team/{index}", timeout=30)
    assert got.status_code == 200, got.text
    names = msgpack.unpackb(zstd_decompress(got.content, 1 << 30))["shards"]
    assert "ours" not in names and "other" in names
    # The upstream shard holding the impostor, asked for by its name: refused, not served.
    theirs = msgpack.unpackb(zstd_decompress(httpx.get(f"{upstream.url}/{index}").content, 1 << 30))
    shard = f"label/{label}/linux-64/shards/{theirs['shards']['ours'].hex()}.msgpack.zst"
    assert httpx.get(f"{proxy.url}/team/{shard}", timeout=30).status_code == 404


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("label", LABELS)
def test_an_impostor_under_a_label_cannot_be_downloaded_by_url(team, label, method):
    proxy, _, _ = team
    url = f"{proxy.url}/team/label/{label}/linux-64"
    assert httpx.request(method, f"{url}/{IMPOSTOR.filename}", timeout=30).status_code == 404
    assert httpx.request(method, f"{url}/{OTHER.filename}", timeout=30).status_code == 200


@pytest.mark.e2e
@pytest.mark.parametrize("sharded", [True, False], ids=["shards", "repodata-json"])
def test_rattler_never_installs_the_impostor_through_a_label(team, sharded):
    proxy, _, base = team
    work = base / f"client-{sharded}"
    url = f"{proxy.url}/team/label/main"
    got = rattler_install(url, work, sharded, "ours")
    assert not got["ok"], got  # no `ours` there at all: the solve fails, nothing installed
    other = rattler_install(url, base / f"other-{sharded}", sharded, "other")
    assert other["ok"], other.get("error")


@pytest.mark.parametrize("subdir", ["noarch", "linux-64"])
def test_a_label_the_upstream_does_not_have_is_still_a_404(team, subdir):
    """Not an empty channel: a client told "not found" for a mistyped label says so, instead
    of finding no packages in it."""
    proxy, _, _ = team
    got = httpx.get(f"{proxy.url}/team/label/mian/{subdir}/repodata.json", timeout=30)
    assert got.status_code == 404, got.text
