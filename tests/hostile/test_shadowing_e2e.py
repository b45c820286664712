"""Dependency confusion end to end: a real upstream channel (indexed by rattler) publishes higher
versions of an internal package name in another case (`Ours-9.0`) and under another file name
with the record's `name` saying `ours` (`zzz-9.5`); the proxy's channel holds the real upload
`ours-1.0`. The merged repodata.json, read with rattler's own record parser (its PackageName
folds case), must hold no record of the normalised name `ours` but the upload, as a client
that reads the whole document (conda, mamba) sees it; and py-rattler must solve and install the
upload, through repodata.json and through shards (in-process checks: test_shadowing.py).

py-rattler's own solve is not fooled by these two impostors even without the fix: its sparse
reader finds records by the file-name key, case-sensitively, and its shard lookup by the exact
name. The record check is the one that fails on the old rule."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package, index_channel
from tests.support.clients import rattler_install
from tests.support.processes import Upstream

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]

# rattler's record parser in a subprocess (py-rattler's threads may crash the interpreter at
# exit: PROTOCOL.md), printing each record's normalised name, version and file name.
READ_RECORDS = """
import json, os, sys
import rattler
sparse = rattler.SparseRepoData(rattler.Channel("team"), "linux-64", sys.argv[1])
records = [
    {"name": r.name.normalized, "version": str(r.version), "file": r.file_name}
    for r in sparse.load_all_records()
]
sys.stdout.write(json.dumps(records) + "\\n")
sys.stdout.flush()
os._exit(0)
"""


def rattler_records(repodata: Path) -> list[dict[str, str]]:
    proc = subprocess.run(
        [sys.executable, "-c", READ_RECORDS, str(repodata)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records: list[dict[str, str]] = json.loads(proc.stdout.splitlines()[-1])
    return records


WRITE = "ci-write-token-1"
MINE = Pkg("ours", "1.0", "h0", "linux-64")


@pytest.fixture(scope="module")
def hostile_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("confusion")
    channel, work = base / "channel", base / "work"
    build_package(Pkg("Ours", "9.0", "h0", "linux-64"), work, channel)
    # A package named `ours` published under another file name.
    renamed = build_package(Pkg("ours", "9.5", "h0", "linux-64"), work, channel)
    renamed.rename(channel / "linux-64" / "zzz-9.5-h0.conda")
    build_package(Pkg("other", "1.0", "h0", "noarch"), work, channel)
    index_channel(channel)
    return channel


@pytest.mark.parametrize("sharded", [True, False], ids=["shards", "repodata-json"])
def test_rattler_installs_the_uploaded_package_never_an_upstream_impostor(
    hostile_channel: Path, start_proxy, tmp_path: Path, sharded: bool
) -> None:
    channel_dir = tmp_path / "channel"
    shutil.copytree(hostile_channel, channel_dir)
    upstream = Upstream(channel_dir).start()
    try:
        proxy = start_proxy(
            {"team": {"upstream": upstream.url}},
            tokens={"ci": {"token": WRITE, "roles": {"team": "write"}}},
        )
        listed = httpx.get(f"{upstream.url}/linux-64/repodata.json").json()
        impostors = {"Ours-9.0-h0.conda", "zzz-9.5-h0.conda"}
        assert impostors <= set(listed["packages.conda"]), "the upstream publishes both"

        mine = build_package(MINE, tmp_path / "work", tmp_path / "mine")
        answer = httpx.post(
            f"{proxy.url}/api/channels/team/upload/{mine.name}",
            content=mine.read_bytes(),
            headers={"x-api-key": WRITE},
            timeout=60,
        )
        assert answer.status_code == 201, answer.text

        merged = tmp_path / "repodata.json"
        merged.write_bytes(httpx.get(f"{proxy.url}/team/linux-64/repodata.json").content)
        named_ours = [r for r in rattler_records(merged) if r["name"] == "ours"]
        assert named_ours == [{"name": "ours", "version": "1.0", "file": MINE.filename}]

        channel = f"{proxy.url}/team"
        got = rattler_install(channel, tmp_path / "client", sharded, "ours")
        assert got["ok"], got.get("error")
        [installed] = got["records"]
        assert (installed["name"], installed["version"]) == ("ours", "1.0"), installed
        assert installed["url"] == f"{channel}/linux-64/{MINE.filename}"
        assert (tmp_path / "client/prefix/share/ours/1.0.txt").is_file()
    finally:
        upstream.stop()
