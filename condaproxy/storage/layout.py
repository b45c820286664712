"""Where things live in the shared bucket (pure key naming, below `storage.url`'s prefix).

cas/sha256/<aa>/<sha256>                 verified package and shard blobs (evictable)
uploads/cas/sha256/<aa>/<sha256>         uploaded packages (never evicted: keep bucket
                                         lifecycle rules off `uploads/`)
uploads/manifests/<channel>.json         one manifest per channel, changed only by
                                         conditional writes (If-Match / If-None-Match)
control/probe/<replica>-<random>         the start-up conditional-write probe
"""

from __future__ import annotations


def blob_key(sha256: str) -> str:
    return f"cas/sha256/{sha256[:2]}/{sha256}"


def upload_blob_key(sha256: str) -> str:
    return f"uploads/cas/sha256/{sha256[:2]}/{sha256}"


def manifest_key(channel: str) -> str:
    return f"uploads/manifests/{channel}.json"
