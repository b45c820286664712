"""The merge job writes the json and zst variants of a merged document as a stream, and leaves
nothing behind when it fails: not on a document it refuses, not halfway through writing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import zstandard

from condaproxy.cache.merging import merge_job, write_merged
from condaproxy.rules.merge import MergedDocument, Piece, merge_repodata

LOCAL = {"ours-1.0-0.conda": {"name": "ours", "version": "1.0", "build": "0", "build_number": 0}}
UPSTREAM = {
    "info": {"subdir": "noarch"},
    "packages.conda": {"ours-0.1-0.conda": {"name": "ours"}, "zlib-1-0.conda": {"name": "zlib"}},
    "v3": {"whl": {}},
}


@pytest.mark.parametrize("upstream", [UPSTREAM, None], ids=["over upstream", "local only"])
def test_the_variants_hold_the_merged_document(tmp_path, upstream):
    source = tmp_path / "repodata.json"
    source.write_bytes(msgspec.json.encode(upstream))
    out = tmp_path / "out"
    out.mkdir()
    path = str(source) if upstream else None
    built = merge_job(path, LOCAL, "noarch", [], str(out), "d1")
    expected = merge_repodata(source.read_bytes() if upstream else None, LOCAL, "noarch", [])
    json_path, json_name, json_size = built.files["json"]
    zst_path, zst_name, zst_size = built.files["zst"]
    assert Path(json_path).read_bytes() == expected
    assert json_size == len(expected)
    zst = Path(zst_path).read_bytes()
    assert zst_size == len(zst)
    assert zstandard.frame_content_size(zst) == len(expected)
    assert zstandard.ZstdDecompressor().decompress(zst) == expected
    assert (built.digest, json_name, zst_name) == ("d1", "d1-json", "d1-zst")


@pytest.mark.parametrize(
    "body", [b"{not json", b"[]", b'{"packages": []}'], ids=["broken", "array", "map"]
)
def test_a_refused_upstream_document_leaves_no_file(tmp_path, body):
    source = tmp_path / "repodata.json"
    source.write_bytes(body)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(msgspec.DecodeError):
        merge_job(str(source), LOCAL, "noarch", [], str(out), "d")
    assert list(out.iterdir()) == []


class Failing(MergedDocument):
    """A merged document whose pieces stop halfway (a bug, a full disk...)."""

    def pieces(self) -> Iterator[Piece]:
        yield b'{"packages":'
        raise OSError("no space left on device")


class Lying(MergedDocument):
    """A merged document whose pieces are not as long as planned."""

    def pieces(self) -> Iterator[Piece]:
        yield b"{}"


@pytest.mark.parametrize(
    ("merged", "error"),
    [(Failing([b"{}" * 10]), OSError), (Lying([b"{} "]), zstandard.ZstdError)],
    ids=["fails halfway", "size differs from the plan"],
)
def test_a_merge_that_fails_while_writing_leaves_no_file(tmp_path, merged, error):
    with pytest.raises(error):
        write_merged(merged, str(tmp_path), "d")
    assert list(tmp_path.iterdir()) == []
