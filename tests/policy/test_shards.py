"""Shards of a policy view are remade only for the names whose records changed."""

from __future__ import annotations

from pathlib import Path

import msgpack
import msgspec

from condaproxy.cache.policy_builds import shards_job
from condaproxy.rules.codecs import zstd_decompress


def view(tmp: Path, name: str, records: dict[str, dict]) -> str:
    path = tmp / name
    path.write_bytes(
        msgspec.json.encode(
            {"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": records}
        )
    )
    return str(path)


def test_only_changed_names_get_new_shards(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    blobs = str(tmp_path / "blobs")
    records = {
        f"p{i}-1.0-0.conda": {"name": f"p{i}", "version": "1.0", "build": "0", "sha256": "ab" * 32}
        for i in range(5)
    }
    first, new = shards_job(view(tmp_path, "a.json", records), "noarch", blobs, str(tmp), None)
    assert len(new) == 5
    names = first.files["names"][0]
    same, new = shards_job(view(tmp_path, "b.json", records), "noarch", blobs, str(tmp), names)
    assert new == [] and same.digest == first.digest
    changed = dict(records)
    changed["p2-2.0-0.conda"] = {"name": "p2", "version": "2.0", "build": "0"}
    after, new = shards_job(view(tmp_path, "c.json", changed), "noarch", blobs, str(tmp), names)
    assert len(new) == 1
    index = msgpack.unpackb(zstd_decompress(Path(after.files["body"][0]).read_bytes()))
    assert index["info"]["shards_base_url"] == "./shards/"
    shard_path = Path(blobs) / new[0][0][:2] / new[0][0][2:4] / new[0][0]
    shard = msgpack.unpackb(zstd_decompress(shard_path.read_bytes()))
    assert set(shard["packages.conda"]) == {"p2-1.0-0.conda", "p2-2.0-0.conda"}
    assert shard["packages.conda"]["p2-1.0-0.conda"]["sha256"] == bytes.fromhex("ab" * 32)
