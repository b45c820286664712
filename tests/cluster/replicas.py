"""Starting N replicas of the proxy that share one bucket, against the real upstream."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.processes import Proxy, free_port, toml_value, write_config
from tests.support.s3 import STORAGE_ENV, S3Server, storage_section

WRITE = "ci-write-token-1"
TOKENS = {"ci": {"token": WRITE, "roles": {"*": "admin"}}}


def wait_for(predicate: Callable[[], Any], seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def start_replicas(
    start_proxy: Callable[..., Any],
    upstream_url: str,
    tmp_path: Path,
    s3: S3Server,
    bucket: str,
    n: int = 2,
    poll_interval: float = 0.5,
    redis_url: str = "",
    cluster: dict[str, object] | None = None,
    **storage: object,
) -> list[Any]:
    """`n` proxies, each with its own L1 directory, one shared [storage] and [cluster]."""
    extra = storage_section(s3, bucket, **storage) + f"[cluster]\npoll_interval = {poll_interval}\n"
    if redis_url:
        extra += f'redis_url = "{redis_url}"\n'
    extra += "".join(f"{k} = {toml_value(v)}\n" for k, v in (cluster or {}).items())
    tmp_path.mkdir(parents=True, exist_ok=True)
    return [
        start_proxy(
            {"local": {"upstream": upstream_url}, "internal": {}},
            cache=tmp_path / f"l1-{i}",
            extra=extra,
            env=STORAGE_ENV,
            tokens=TOKENS,
        )
        for i in range(n)
    ]


PEER_TOKEN = "cluster-peer-token-0123456789"


def start_peers(
    started: list[Any],
    upstream_url: str,
    tmp_path: Path,
    s3: S3Server,
    bucket: str,
    redis_url: str,
    n: int = 2,
    cluster: dict[str, object] | None = None,
) -> list[Any]:
    """Replicas that stream each other's downloads: each knows its own port in advance, so
    its `peer_url` can be written into its config (`started` collects them for teardown)."""
    proxies = []
    for i in range(n):
        port = free_port()
        peer = {"peer_url": f"http://127.0.0.1:{port}", "peer_token": PEER_TOKEN}
        extra = storage_section(s3, bucket) + f'[cluster]\nredis_url = "{redis_url}"\n'
        extra += "".join(f"{k} = {toml_value(v)}\n" for k, v in {**peer, **(cluster or {})}.items())
        config = write_config(
            tmp_path / f"peer{i}.toml",
            tmp_path / f"peer-l1-{i}",
            {"local": {"upstream": upstream_url}, "internal": {}},
            extra=extra,
            tokens=TOKENS,
        )
        proxy = Proxy(config, port=port, env=STORAGE_ENV)
        started.append(proxy)
        proxies.append(proxy.start())
    return proxies
