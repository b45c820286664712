"""What other workers can learn of a download running in this one: a small note per file, in
`cache/inflight/`, saying where its bytes are (the temp file, or nowhere another process can
read when the download is not kept) and what the channel publishes for it. Written by the
worker that runs the download, read by the others that join it."""

from __future__ import annotations

import json
from pathlib import Path

from ..rules.names import hashed_name
from ..storage.blobs import TempBlob
from .transfer import Head, content_type


class InflightNotes:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

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
        try:
            partial = path.with_suffix(".partial")
            partial.write_text(json.dumps(info))
            partial.replace(path)
        except OSError:
            path.unlink(missing_ok=True)

    def forget(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def head(self, key: str) -> tuple[Head, str | None, bool] | None:
        """The head of another worker's download, its temp file, and whether it is kept."""
        try:
            info = json.loads(self.path(key).read_text())
        except (FileNotFoundError, ValueError):
            return None
        head = Head(info["size"], content_type(key), info["sha256"])
        return head, info["temp"], bool(info.get("kept", info["temp"]))

    def mode(self, key: str) -> str:
        """What another worker's download of `key` is doing: `disk`, `memory` (nothing we
        can read from here) or `gone`."""
        found = self.head(key)
        if found is None:
            return "gone"
        return "disk" if found[1] else "memory"
