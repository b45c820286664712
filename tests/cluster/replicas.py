"""Starting N replicas of the proxy that share one bucket, against the real upstream."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.processes import toml_value
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
