"""What a build makes of an upstream body: the variant files to adopt, named by content (or by
their inputs), and the plain build that keeps the body as it came. File I/O on temp files only;
metadata.py adopts them into the store."""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..rules.codecs import TooLarge, decode_content
from ..rules.errors import UpstreamError
from ..rules.rewrite import Origins
from ..rules.zstd_frames import zstd_problem
from .workers import Workers

if TYPE_CHECKING:
    from .inflating import Inflating

# A variant file ready to adopt: (path, sha256, size).
VariantFile = tuple[str, str, int]


@dataclass(frozen=True)
class Built:
    """What a build function makes of an upstream body."""

    digest: str
    files: dict[str, VariantFile]
    origins: Origins = field(default_factory=Origins)
    inflated: int = 0  # the size of the JSON document a "zst" file holds (0: unknown)
    # The content's sha256 of each file whose name (VariantFile[1]) is derived from its inputs
    # rather than its content: what a copy from before a restart is checked against.
    contents: dict[str, str] = field(default_factory=dict)


# (workers, body path, upstream URL, temp dir, size limit, the body's JSON document if it was
# decompressed as it arrived) -> Built: each build decides which of its steps run in a thread
# and which in the worker process (module-level functions).
BuildFn = Callable[[Workers, str, str, str, int, "Inflating | None"], Awaitable[Built]]


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def temp_path(tmp_dir: str, name: str) -> str:
    """A fresh temp file name in `tmp_dir` (`.partial`: the start-up sweep's to delete)."""
    return os.path.join(tmp_dir, f"{os.getpid()}-{os.urandom(6).hex()}.{name}.partial")


@contextlib.contextmanager
def partial(tmp_dir: str, name: str) -> Iterator[str]:
    """A fresh temp file name to write a variant to, removed if the writing fails: a full
    disk leaves no half-written file behind (the start-up sweep is too late: it would keep the
    disk full until then)."""
    path = temp_path(tmp_dir, name)
    try:
        yield path
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def write_variant(
    tmp_dir: str, name: str, data: bytes, blob_name: str | None = None
) -> VariantFile:
    """Write a variant to a temp file. Its blob name is the content's sha256, or `blob_name`
    when the caller already knows a unique name (derived data named after its inputs)."""
    with partial(tmp_dir, name) as path, open(path, "wb") as f:
        f.write(data)
    return path, blob_name or hashlib.sha256(data).hexdigest(), len(data)


def decode_body(path: str, coding: str, limit: int, url: str) -> None:
    """Undo the Content-Encoding of the body stored at `path`, in place, never writing more
    than `limit` bytes."""
    decoded = path + ".decoded"
    try:
        with open(path, "rb") as src, open(decoded, "wb") as out:
            for piece in decode_content(src, coding, limit):
                out.write(piece)
        os.replace(decoded, path)
    except TooLarge as exc:
        raise UpstreamError(url, f"body {exc} (cache.max_repodata_size)") from None
    except ValueError as exc:
        raise UpstreamError(url, f"unusable {coding} body: {exc}"[:300]) from None
    finally:
        Path(decoded).unlink(missing_ok=True)


def check_zstd_file(path: str, url: str, limit: int) -> None:
    """Refuse a `.zst` body that is not whole zstd frames (rules/zstd_frames.py): one cut short
    still decodes to a complete document here, yet clients refuse it, so it must not pass
    through as the variant they are served. A document within `limit` needs no more blocks
    than one per KiB (real encoders fill blocks of up to 128 KiB)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            problem: str | None = "no zstd frame (empty body)"
        else:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                problem = zstd_problem(data, limit // 1024 + 1024)
    if problem is not None:
        raise UpstreamError(url, f"unusable .zst body: {problem}")


def _identity(body_path: str) -> Built:
    sha = file_sha256(body_path)
    return Built(sha, {"body": (body_path, sha, os.path.getsize(body_path))})


async def identity_build(
    workers: Workers,
    body_path: str,
    url: str,
    tmp_dir: str,
    limit: int,
    early: Inflating | None = None,
) -> Built:
    return await workers.run(False, _identity, body_path)
