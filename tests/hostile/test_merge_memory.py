"""Bounded memory against a conda-forge-sized upstream: merging uploads over it never holds the
upstream document, nor the merged one, in memory (issue 14).

The merge worker maps the upstream snapshot (file-backed pages, which the kernel can drop) and
writes the json and zst variants piece by piece. Python's own allocations during a merge
(traced by tracemalloc: every bytes object, dict and decoded key) stay a small fraction of the
document's size, on each path the merge can take: local records spliced into maps that pass
through untouched, and maps decoded into their members when upstream records are hidden.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import msgspec
import pytest
import zstandard

from condaproxy.cache.merging import merge_job
from condaproxy.rules.merge import merge_repodata

RECORDS = 40_000


def record(i: int, name: str) -> dict:
    return {
        "build": f"py312h{i:08x}_0",
        "build_number": 0,
        "depends": ["python >=3.12,<3.13.0a0", "libzlib >=1.3.1,<2.0a0", f"dep{i % 97} >=1"],
        "license": "BSD-3-Clause",
        "md5": f"{i:032x}",
        "name": name,
        "sha256": f"{i:064x}",
        "size": 100_000 + i,
        "subdir": "linux-64",
        "timestamp": 1_700_000_000_000 + i,
        "version": f"{i % 13}.{i % 7}.0",
    }


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Path:
    """A linux-64 repodata.json written as conda-index writes it (indented), ~28 MB."""
    packages, conda = {}, {}
    for i in range(RECORDS):
        name = f"pkg{i % 5000}"
        fn = f"{name}-{i % 13}.{i % 7}.0-py312h{i:08x}_0"
        if i % 3:
            conda[fn + ".conda"] = record(i, name)
        else:
            packages[fn + ".tar.bz2"] = record(i, name)
    doc = {"info": {"subdir": "linux-64"}, "packages": packages, "packages.conda": conda}
    path = tmp_path_factory.mktemp("upstream") / "repodata.json"
    path.write_text(json.dumps({**doc, "removed": [], "repodata_version": 1}, indent=2))
    return path


def upload(name: str, version: str = "1.0") -> dict:
    return {"name": name, "version": version, "build": "h0_0", "build_number": 0, "depends": []}


# (local records, the share of the document's size Python may allocate at the peak)
UPLOADS = {
    # The common case, internal names the upstream does not have: spliced into the maps.
    "new name": ({"internal-1.0-h0_0.conda": upload("internal")}, 0.05),
    # Dependency confusion, a local name hides upstream records in both maps: decoded into
    # members, a key and a view each (~170 bytes against ~530 of record), and a few batches
    # of output at a time.
    "hides upstream records": ({"pkg7-9.0-h0_0.conda": upload("pkg7", "9.0")}, 0.5),
    # Many names: decoding the maps is cheaper than one search per name.
    "forty names": (
        {f"internal{i}-1.0-h0_0.conda": upload(f"internal{i}") for i in range(40)},
        0.5,
    ),
}


@pytest.mark.parametrize(("local", "share"), UPLOADS.values(), ids=UPLOADS.keys())
def test_a_merge_over_a_conda_forge_sized_upstream_never_holds_the_document_in_memory(
    upstream, tmp_path, local, share
):
    size = upstream.stat().st_size
    tracemalloc.start()
    try:
        built = merge_job(str(upstream), local, "linux-64", [], str(tmp_path), "digest")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Holding the whole document would be 1.0 and more.
    assert peak < size * share, f"{peak / size:.3f} of the document's size"

    json_path, _, json_size = built.files["json"]
    data = Path(json_path).read_bytes()
    assert data == merge_repodata(upstream.read_bytes(), local, "linux-64", [])
    assert json_size == len(data)
    zst = Path(built.files["zst"][0]).read_bytes()
    assert zstandard.frame_content_size(zst) == len(data)  # declared, and checked by zstd
    assert zstandard.ZstdDecompressor().decompress(zst) == data
    merged = msgspec.json.decode(data)
    assert set(local) <= set(merged["packages.conda"])
