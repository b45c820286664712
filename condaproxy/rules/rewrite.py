"""Pure rewriting of channel metadata so every URL a client fetches points at the proxy.

CEP-15 lets repodata carry `info.base_url` (absolute, root-relative or relative) and CEP-16
shard indexes carry `info.base_url` and `info.shards_base_url`. Clients follow them, so left
alone they would bypass the proxy. Each rewrite returns where files really come from, so the
proxy can fetch them there. No I/O.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import msgspec

from .codecs import decode_json
from .records import find_keyed_objects

Document = bytes | mmap.mmap  # a JSON document, read or mapped


@dataclass(frozen=True)
class Origins:
    """Absolute upstream bases for package files and shards of one subdir (None = default)."""

    packages: str | None = None
    shards: str | None = None


class _InfoOnly(msgspec.Struct):
    info: dict[str, Any] = {}


def _as_dir(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def rewrite_repodata(data: Document, repodata_url: str) -> tuple[Document, Origins]:
    """Drop `info.base_url` so packages resolve next to the repodata (i.e. via the proxy).

    Returns `data` itself (no copy) when there is no base_url: the common case passes
    upstream bytes through unparsed. `data` may be a read-only mmap of the document.
    Unknown keys (v3, repodata_revisions) are kept intact.

    `info` is read as a client reads it (the last of duplicate keys, escapes decoded), and
    the rewritten document is read back the same way: a base_url only some client would see
    (a second `info` key, a key written `base\u005furl`, an `info` key written with an
    escape) must not survive the rewrite and send clients around the proxy. Every object
    under an `info` key that equals the document's info is rewritten (a copy inside a record
    loses its base_url too); a document whose info still has one afterwards is refused.
    """
    info = decode_json(data, _InfoOnly).info
    if "base_url" not in info:
        return data, Origins()
    base_url = info["base_url"]
    origin = None
    if isinstance(base_url, str) and base_url:
        origin = _as_dir(urljoin(repodata_url, base_url))
    new_info = msgspec.json.encode({k: v for k, v in info.items() if k != "base_url"})
    pieces: list[bytes] = []
    done = 0
    for start, end in find_keyed_objects(data, "info"):
        if start >= done and decode_json(data[start:end]) == info:
            pieces += [data[done:start], new_info]
            done = end
    rewritten = b"".join([*pieces, data[done:]])
    if not pieces or "base_url" in decode_json(rewritten, _InfoOnly).info:
        raise ValueError("repodata info object with base_url could not be rewritten")
    return rewritten, Origins(packages=origin)


SHARD_BASE = "./shards/"
PACKAGE_BASE = "./"
# Relative references that already name the proxy's own layout next to the index (a client
# resolves them against the URL it fetched, i.e. the proxy's).
_SAME_PACKAGE_BASE = frozenset({"", ".", "./"})
_SAME_SHARD_BASE = frozenset({"shards/", "./shards/"})


def shard_index_is_local(index: dict[str, Any]) -> bool:
    """Whether a shard index already points at the proxy's layout as it stands: `base_url`
    and `shards_base_url` (CEP-16 requires both) are relative references to the index's own
    directory and its `shards/`. Such an index is served as the upstream's bytes."""
    info = index.get("info")
    if not isinstance(info, dict):
        return False
    return (
        info.get("base_url") in _SAME_PACKAGE_BASE
        and info.get("shards_base_url") in _SAME_SHARD_BASE
    )


def rewrite_shard_index(index: dict[str, Any], index_url: str) -> tuple[dict[str, Any], Origins]:
    """Point `base_url` and `shards_base_url` (both required by CEP-16) at the proxy's own
    layout next to the index, remembering the upstream locations they named."""
    info = dict(index.get("info") or {})
    packages = _as_dir(urljoin(index_url, info.get("base_url") or "./"))
    shards = _as_dir(urljoin(index_url, info.get("shards_base_url") or SHARD_BASE))
    info["base_url"] = PACKAGE_BASE
    info["shards_base_url"] = SHARD_BASE
    return {**index, "info": info}, Origins(packages=packages, shards=shards)
