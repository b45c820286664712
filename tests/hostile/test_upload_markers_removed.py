"""Uploads stay uploads when the files that flag their changes are removed.

Every worker keeps a subdir's upload manifest in memory and re-reads it when the subdir's
marker file (`cache/uploads/changed/...`) is replaced. A missing marker was read as "this
subdir never had uploads": removing `uploads/changed/` (a cleanup of what looks like scratch
files, a restore that skips empty files) made every upload vanish from its channel, and the
upstream's package of the same name was served in its place. A missing marker is now laid down
again and the manifest read from the upload index, which is the truth.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package
from tests.support.hostile import one_cache, upload

pytestmark = pytest.mark.integration

WRITE = "ci-write-token-1"


@pytest.mark.parametrize("when", ["running", "stopped"])
def test_an_upload_still_hides_the_upstream_file_when_its_markers_are_removed(
    tmp_path: Path, start_proxy, when: str
) -> None:
    package = build_package(
        Pkg("internal-tool", "1.0", "h0", "linux-64"), tmp_path / "w", tmp_path / "o"
    )
    data = package.read_bytes()
    impostor = os.urandom(200_000)  # the upstream's file of the same name
    name = f"linux-64/{package.name}"
    cache = tmp_path / "cache"
    with one_cache(tmp_path, start_proxy, {name: impostor}, writer=WRITE) as (upstream, start):
        proxy = start()
        posted = upload(proxy, package.name, data, WRITE)
        assert posted.status_code == 201, posted.text
        assert httpx.get(f"{proxy.url}/ch/{name}", timeout=30).content == data
        if when == "stopped":
            proxy.stop()
            shutil.rmtree(cache / "uploads" / "changed")
            proxy = start()
        else:
            shutil.rmtree(cache / "uploads" / "changed")
        for _ in range(2):
            got = httpx.get(f"{proxy.url}/ch/{name}", timeout=30)
            assert got.status_code == 200
            assert hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()
            listed = httpx.get(f"{proxy.url}/ch/linux-64/repodata.json", timeout=30).json()
            record = listed["packages.conda"][package.name]
            assert record["sha256"] == hashlib.sha256(data).hexdigest()
        assert upstream.count("GET", f"/{name}") == 0
