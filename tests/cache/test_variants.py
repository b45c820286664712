"""What a build makes of an upstream body: decoded content codings within the limit, variant
files named by content, and the identity build."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import zlib
from pathlib import Path

import pytest
import zstandard

from condaproxy.cache.variants import decode_body, file_sha256, identity_build, write_variant
from condaproxy.cache.workers import Workers
from condaproxy.rules.errors import UpstreamError

BODY = b'{"info": {"subdir": "noarch"}, "packages": {}}' * 100


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("zstd", zstandard.compress),
    ],
)
def test_a_coded_body_is_decoded_in_place(tmp_path: Path, coding, encode):
    path = tmp_path / "body"
    path.write_bytes(encode(BODY))
    decode_body(str(path), coding, 1 << 20, "https://up.example/x")
    assert path.read_bytes() == BODY


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
def test_a_coded_bomb_stops_at_the_limit_and_names_it(tmp_path: Path, coding):
    path = tmp_path / "body"
    bomb = b"\0" * (4 << 20)
    path.write_bytes(gzip.compress(bomb) if coding == "gzip" else zstandard.compress(bomb))
    with pytest.raises(UpstreamError, match="max_repodata_size"):
        decode_body(str(path), coding, 1 << 20, "https://up.example/x")
    assert not (tmp_path / "body.decoded").exists()


def test_garbage_under_a_coding_is_an_upstream_error(tmp_path: Path):
    path = tmp_path / "body"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(UpstreamError, match="gzip"):
        decode_body(str(path), "gzip", 1 << 20, "https://up.example/x")


def test_variants_are_named_by_content_unless_named_by_their_inputs(tmp_path: Path):
    path, name, size = write_variant(str(tmp_path), "json", BODY)
    assert name == hashlib.sha256(BODY).hexdigest() == file_sha256(path) and size == len(BODY)
    _, named, _ = write_variant(str(tmp_path), "json", BODY, "inputs-digest")
    assert named == "inputs-digest"


def test_the_identity_build_keeps_the_body_as_it_came(tmp_path: Path):
    body = tmp_path / "body"
    body.write_bytes(BODY)
    workers = Workers()
    try:
        built = asyncio.run(identity_build(workers, str(body), "u", str(tmp_path), 1 << 20))
    finally:
        workers.close()
    assert built.files["body"] == (str(body), hashlib.sha256(BODY).hexdigest(), len(BODY))
