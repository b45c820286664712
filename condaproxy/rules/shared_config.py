"""The rules a [storage] and [cluster] configuration must meet (issue 9), checked at load: a
bucket name S3 accepts and a prefix of plain segments, an http(s) endpoint (plain http only
when asked for), credentials both or neither, a redis:// URL, a peer URL with its token. Pure:
the sections are read by attribute (settings.py defines them)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from .config_text import ConfigError
from .config_urls import check_http_url

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


def check_shared(storage: Any, cluster: Any, where: str) -> None:
    """[storage] names a bucket the SDK can reach; [cluster] only makes sense with it."""
    if cluster is not None and storage is None:
        raise ConfigError(f"{where}: [cluster] needs [storage] (the bucket replicas share)")
    if cluster is not None:
        _check_cluster(cluster, where)
    if storage is None:
        return
    try:
        parts = urlsplit(storage.url)
    except ValueError:  # `s3://[bucket`: one line naming the key, not a traceback
        parts = urlsplit("")
    if parts.scheme != "s3" or not _BUCKET.match(parts.netloc) or ".." in parts.netloc:
        raise ConfigError(
            f"{where}: 'storage.url' must be s3://<bucket>[/<prefix>] with a valid bucket name"
        )
    segments = parts.path.strip("/").split("/") if parts.path.strip("/") else []
    if (
        parts.query
        or parts.fragment
        or not all(_KEY_SEGMENT.match(s) and s not in {".", ".."} for s in segments)
    ):
        raise ConfigError(
            f"{where}: 'storage.url' prefix must be plain path segments (letters, digits, '._-')"
        )
    if storage.endpoint:
        try:
            endpoint = check_http_url(storage.endpoint)
        except ValueError as exc:
            raise ConfigError(f"{where}: 'storage.endpoint' {exc}") from None
        if urlsplit(endpoint).scheme == "http" and not storage.allow_http:
            raise ConfigError(
                f"{where}: 'storage.endpoint' is plain http: use https, or set "
                "storage.allow_http = true for a store on a trusted network"
            )
    if (storage.access_key_id is None) != (storage.secret_access_key is None):
        raise ConfigError(
            f"{where}: 'storage.access_key_id' and 'storage.secret_access_key' go together "
            "(set both, or neither for ambient credentials)"
        )


def _check_cluster(cluster: Any, where: str) -> None:
    redis = cluster.redis_url.value if cluster.redis_url is not None else ""
    if redis:
        why = _redis_url_problem(redis)
        if why:  # the URL itself is never shown: it may hold the password
            raise ConfigError(f"{where}: 'cluster.redis_url' {why}")
    if cluster.peer_url:
        try:
            check_http_url(cluster.peer_url)
        except ValueError as exc:
            raise ConfigError(f"{where}: 'cluster.peer_url' {exc}") from None
    if cluster.peer_token is not None and len(cluster.peer_token.value) < 16:
        # With or without peer_url: the token is a read token for every channel, private
        # ones included, whichever replica holds it.
        raise ConfigError(
            f"{where}: 'cluster.peer_token' is too short (at least 16 characters): it reads "
            "every channel"
        )
    if cluster.peer_url and cluster.peer_token is None:
        raise ConfigError(
            f"{where}: 'cluster.peer_url' needs 'cluster.peer_token' (at least 16 characters)"
        )


def _redis_url_problem(url: str) -> str:
    """What keeps `url` from being a Redis address the client can open ("" if nothing): a
    port or IPv6 literal that does not parse, no host, or a database that is not a number
    stop start-up here, naming the key, instead of as a traceback when the app starts."""
    if any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in url):
        return "holds spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # parsed on access: `:abc` and `:99999` raise here
    except ValueError:
        return "is not a URL (a port or IPv6 address that does not parse)"
    if parts.scheme not in {"redis", "rediss"}:
        return "is not a redis:// or rediss:// URL"
    if not parts.hostname or port == 0:
        return "names no host (redis://[:password@]host[:port][/db])"
    database = parts.path.strip("/")
    if database and not database.isdigit():
        return "has a database that is not a number (redis://host:port/0)"
    return ""
