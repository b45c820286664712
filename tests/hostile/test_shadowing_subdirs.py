"""Dependency confusion across subdirs: a client of a platform reads two subdirs of a channel, its
platform's and noarch, and solves over both. The team uploads `ours 1.0` for linux-64; an
attacker publishes `ours 99.0` upstream as noarch (or the other way round: the upload is noarch,
the impostor linux-64). The uploaded name must hide the impostor in every subdir of the channel,
or the solver installs 99.0 from the subdir that holds no upload. Real upstream, real proxy,
py-rattler solving through repodata.json and through shards."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package, index_channel
from tests.support.clients import rattler_install
from tests.support.processes import Upstream

pytestmark = pytest.mark.e2e

WRITE = "ci-write-token-1"
CASES = {
    # upload subdir, impostor subdir
    "upload-linux-64-impostor-noarch": ("linux-64", "noarch"),
    "upload-noarch-impostor-linux-64": ("noarch", "linux-64"),
}


@pytest.mark.parametrize("sharded", [True, False], ids=["shards", "repodata-json"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_an_uploaded_name_hides_the_upstream_impostor_in_the_other_subdir(
    start_proxy, tmp_path: Path, case: str, sharded: bool
) -> None:
    mine_subdir, impostor_subdir = CASES[case]
    channel_dir, work = tmp_path / "channel", tmp_path / "work"
    impostor = Pkg("ours", "99.0", "0", impostor_subdir)
    build_package(impostor, work, channel_dir)
    build_package(Pkg("other", "1.0", "h0", "linux-64"), work, channel_dir)
    index_channel(channel_dir)
    upstream = Upstream(channel_dir).start()
    try:
        proxy = start_proxy(
            {"team": {"upstream": upstream.url}},
            tokens={"ci": {"token": WRITE, "roles": {"team": "write"}}},
        )
        mine = build_package(Pkg("ours", "1.0", "h0", mine_subdir), work, tmp_path / "mine")
        answer = httpx.post(
            f"{proxy.url}/api/channels/team/upload/{mine.name}",
            content=mine.read_bytes(),
            headers={"x-api-key": WRITE},
            timeout=60,
        )
        assert answer.status_code == 201, answer.text

        # What every client sees of the impostor's subdir: no record of it, and a 404 by URL.
        listed = httpx.get(f"{proxy.url}/team/{impostor_subdir}/repodata.json").json()
        assert impostor.filename not in listed["packages.conda"]
        by_url = httpx.get(f"{proxy.url}/team/{impostor_subdir}/{impostor.filename}")
        assert by_url.status_code == 404, by_url.status_code

        got = rattler_install(f"{proxy.url}/team", tmp_path / "client", sharded, "ours")
        assert got["ok"], got.get("error")
        [installed] = got["records"]
        assert (installed["name"], installed["version"]) == ("ours", "1.0"), installed
        # The upstream's other packages are still there.
        other = rattler_install(f"{proxy.url}/team", tmp_path / "client2", sharded, "other")
        assert other["ok"], other.get("error")
    finally:
        upstream.stop()
