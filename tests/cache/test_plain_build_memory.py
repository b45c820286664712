"""Issue 14's memory floor: checking and storing a big plain-JSON snapshot (an upstream's
current_repodata.json is 18 MB for conda-forge's linux-64, some channels serve only
repodata.json) does not copy the document into the build process's own memory: it is mapped
from its file, whose pages the system can take back."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from condaproxy.cache.builds import finish_repodata
from condaproxy.cache.workers import Workers

MiB = 1 << 20


def _anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon")


def _build_watched(body: str, url: str, tmp_dir: str) -> tuple[int, str]:
    """The build, and the most anonymous memory it added to the process while it ran."""
    before, peak, done = _anon(), [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _anon() - before)
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        built = finish_repodata(body, body, None, url, tmp_dir)
    finally:
        done.set()
        watcher.join()
    return peak[0], built.digest


def _document(path: Path, records: int) -> int:
    packages = {
        f"pkg{i}-1.0-h{i:08x}_0.tar.bz2": {
            "name": f"pkg{i}",
            "version": "1.0",
            "build": f"h{i:08x}_0",
            "build_number": 0,
            "depends": ["python >=3.8", "libzlib >=1.2.13,<2.0a0", "openssl >=3.0,<4.0a0"],
            "sha256": f"{i:064x}",
            "size": 1000 + i,
            "subdir": "linux-64",
        }
        for i in range(records)
    }
    doc = {"info": {"subdir": "linux-64"}, "packages": packages, "packages.conda": {}}
    path.write_text(json.dumps(doc))
    return path.stat().st_size


async def test_a_big_plain_json_build_is_not_copied_into_the_build_process(tmp_path: Path):
    body = tmp_path / "current_repodata.json"
    size = _document(body, 100_000)
    assert size > 24 * MiB
    workers = Workers()
    try:
        url = "https://upstream.example/cf/linux-64/current_repodata.json"
        added, digest = await workers.run(True, _build_watched, str(body), url, str(tmp_path))
    finally:
        workers.close()
    stored = next(p for p in tmp_path.iterdir() if p.name != body.name)
    assert digest and stored.stat().st_size > 0, "the build still stores the snapshot"
    assert added < size // 2, (
        f"the build added {added / MiB:.0f} MiB for a {size / MiB:.0f} MiB document"
    )
