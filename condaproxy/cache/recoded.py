"""The variants made from a stored snapshot's .zst (derived.py decides when): its JSON
document, and the bzip2 and gzip of it, streamed with bounded memory whatever the size.

A module of its own, importing only what these need: a big snapshot's variants are made in the
worker process (workers.py), which imports the module a function comes from. Importing
derived.py there would bring the whole cache layer into it, about 20 MiB more of memory for the
process's whole life (issue 14).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import mmap
import os
from collections.abc import Iterator

import zstandard

from ..rules.codecs import PIECE, decode_msgpack, zstd_decompress
from ..rules.record_lines import record_lines
from ..rules.shard_names import encode_names
from .variants import VariantFile, file_sha256, partial, write_variant


def _json_pieces(zst_path: str) -> Iterator[bytes]:
    """The JSON document of a stored .zst variant, in pieces: never whole in memory."""
    with open(zst_path, "rb") as src, zstandard.ZstdDecompressor().stream_reader(src) as reader:
        while piece := reader.read(PIECE):
            yield piece


def json_file(zst_path: str, tmp_dir: str) -> VariantFile:
    """The JSON variant, decompressed from the .zst one (a snapshot stores only its .zst until
    somebody needs the JSON: a client without zstd or gzip, a merge, a record lookup)."""
    with partial(tmp_dir, "json") as path:
        with open(path, "wb") as out:
            for piece in _json_pieces(zst_path):
                out.write(piece)
        return path, file_sha256(path), os.path.getsize(path)


def bz2_file(zst_path: str, tmp_dir: str) -> VariantFile:
    """bzip2 of the JSON document, level 9, streamed: bounded memory whatever the size."""
    compressor = bz2.BZ2Compressor(9)
    with partial(tmp_dir, "bz2") as path:
        with open(path, "wb") as out:
            for piece in _json_pieces(zst_path):
                out.write(compressor.compress(piece))
            out.write(compressor.flush())
        return path, file_sha256(path), os.path.getsize(path)


def gzip_file(zst_path: str, tmp_dir: str) -> VariantFile:
    """gzip of the JSON document, for clients that read repodata.json with Accept-Encoding:
    gzip (conda's classic fetch), streamed."""
    with partial(tmp_dir, "gz") as path:
        with (
            open(path, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as out,
        ):
            for piece in _json_pieces(zst_path):
                out.write(piece)
        return path, file_sha256(path), os.path.getsize(path)


def names_file(index_path: str, tmp_dir: str) -> VariantFile:
    """A stored shard index's {name: shard digest} map as sorted lines (rules/shard_names),
    which every worker then searches in place instead of decoding the index. Made after the
    index is adopted, off the path of the client that fetched it."""
    with open(index_path, "rb") as f:
        document = decode_msgpack(zstd_decompress(f.read()))
    shards = document.get("shards") if isinstance(document, dict) else None
    return write_variant(tmp_dir, "names", encode_names(shards if isinstance(shards, dict) else {}))


def records_file(json_path: str, tmp_dir: str) -> VariantFile:
    """What a miss needs of each record of a big snapshot's JSON, as sorted lines
    (rules/record_lines), which every worker then searches in place instead of parsing the
    whole document per miss. Made in the worker process, written as they come."""
    digest = hashlib.sha256()
    with partial(tmp_dir, "records") as path:
        with (
            open(json_path, "rb") as f,
            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m,
            open(path, "wb", buffering=PIECE) as out,
            contextlib.closing(record_lines(m)) as lines,  # its views of m go before m
        ):
            for line in lines:
                digest.update(line)
                out.write(line)
        return path, digest.hexdigest(), os.path.getsize(path)
