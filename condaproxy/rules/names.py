"""File names for keys: keys hold `/`, `:` and whatever a path must not, so a file named after
one (a lock, an in-flight note, a metadata store, an upload marker) is named by its hash."""

from __future__ import annotations

import hashlib


def hashed_name(key: str, suffix: str = "") -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32] + suffix
