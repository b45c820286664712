"""What other workers can learn of a download running in this one: a small note per file, in
`cache/inflight/`, saying where its bytes are (the temp file, or nowhere another process can
read when the download is not kept) and what the channel publishes for it. Written by the
worker that runs the download, read by the others that join it."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from ..rules.names import hashed_name
from ..storage.blobs import TempBlob
from ..storage.entries import ensure_dir, open_regular, place, remove_entry
from .transfer import Head, content_type


class InflightNotes:
    def __init__(self, directory: Path, temp_dir: Path) -> None:
        self.directory = directory
        self.temp_dir = temp_dir  # where every worker's temp files are
        ensure_dir(directory, directory.parent)

    def path(self, key: str) -> Path:
        return self.directory / hashed_name(key, ".json")

    def announce(self, key: str, temp: TempBlob | None, head: Head, kept: bool = True) -> None:
        """Tell other workers where the bytes are (None: nowhere they can read) and whether
        the file will be cached (then they wait for it rather than fetch it themselves). Best
        effort: on a full disk they find nothing and wait for the lock, then fetch alone."""
        info = {
            "temp": str(temp.path) if temp else None,
            "kept": kept,
            "size": head.size,
            "sha256": head.sha256,
        }
        path = self.path(key)
        partial = path.with_suffix(".partial")
        try:
            try:
                partial.write_text(json.dumps(info))
            except (FileNotFoundError, NotADirectoryError):  # removed, or a file in its place
                ensure_dir(self.directory, self.directory.parent)
                partial.write_text(json.dumps(info))
            place(partial, path, self.directory)
        except OSError:
            with contextlib.suppress(OSError):
                remove_entry(path)

    def forget(self, key: str) -> None:
        with contextlib.suppress(OSError):  # nothing there to forget
            remove_entry(self.path(key))

    def head(self, key: str) -> tuple[Head, str | None, bool] | None:
        """The head of another worker's download, its temp file, and whether it is kept."""
        try:
            fd = open_regular(self.path(key))
            with os.fdopen(fd, "rb") as f:
                info = json.loads(f.read(4096))
            size, sha256, temp = info["size"], info["sha256"], info["temp"]
            kept = bool(info.get("kept", temp))
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
            return None  # none, or not one a worker wrote (garbage left by a crash or a hand)
        if not (size is None or (isinstance(size, int) and size >= 0)):
            return None
        if not (sha256 is None or isinstance(sha256, str)):
            return None
        if temp is not None and not (
            isinstance(temp, str) and os.path.dirname(temp) == str(self.temp_dir)
        ):
            return None  # only a temp file of the cache's own is ever followed
        return Head(size, content_type(key), sha256), temp, kept

    def mode(self, key: str) -> str:
        """What another worker's download of `key` is doing: `disk`, `memory` (nothing we
        can read from here) or `gone`."""
        found = self.head(key)
        if found is None:
            return "gone"
        return "disk" if found[1] else "memory"
