"""`condaproxy serve [--config PATH] [--host H] [--port P] [--workers N]`.

The app is imported only after the metrics directory is set up: prometheus-client chooses its
multiprocess mode when it is first imported.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from .settings import CONFIG_ENV, ConfigError, check_cache_path, load_settings

SHARED_MEMORY = Path("/dev/shm")


def prepare_metrics_dir(cache_path: Path) -> Path:
    """An empty directory for prometheus-client's multiprocess mode, named before anything
    imports prometheus-client (it picks its mode at import) and before workers start.

    It lives in shared memory where there is some, not on the cache's disk: prometheus-client
    writes its values through mmap, and a store that fills its disk must not take the metrics
    (or, by SIGBUS, the process) down with it."""
    if os.access(SHARED_MEMORY, os.W_OK):
        tag = hashlib.sha256(str(cache_path.resolve()).encode()).hexdigest()[:16]
        directory = SHARED_MEMORY / f"condaproxy-metrics-{tag}"
    else:
        directory = cache_path / "metrics"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


def app_factory() -> object:
    """For uvicorn workers (`--workers N` imports the app again in each process)."""
    from .app import create_app
    from .logs import configure_logging
    from .redact import Redactor

    settings = load_settings(os.environ.get(CONFIG_ENV))
    configure_logging(Redactor(settings.secrets()))
    return create_app(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="condaproxy", description="Caching proxy for conda channels"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", help=f"config file (default: ${CONFIG_ENV} or ./proxy.toml)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    args = parser.parse_args(argv)

    try:
        settings = load_settings(args.config)
        check_cache_path(settings)
    except ConfigError as exc:
        print(f"condaproxy: config error: {exc}", file=sys.stderr)
        return 2
    host = args.host or settings.server.host
    port = args.port or settings.server.port
    workers = args.workers or settings.server.workers

    metrics_dir = prepare_metrics_dir(settings.cache.path)

    import uvicorn

    from .app import create_app
    from .logs import configure_logging
    from .redact import Redactor

    configure_logging(Redactor(settings.secrets()))
    # uvicorn's own records go through our pipeline (log_config=None keeps its dictConfig off).
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": False,  # condaproxy logs every request itself, with its cache outcome
        "log_level": "warning",
        "log_config": None,
        "proxy_headers": False,  # nothing uses the client address; skip the per-request rewrite
    }
    import structlog

    structlog.get_logger("condaproxy.cli").info(
        "listening",
        url=f"http://{host}:{port}",
        config=os.path.abspath(settings.source),
        workers=workers,
        cache=str(settings.cache.path),
    )
    try:
        if workers > 1:
            # Each worker builds its own app from the same file; they share the cache.
            os.environ[CONFIG_ENV] = os.path.abspath(args.config or settings.source)
            uvicorn.run("condaproxy.cli:app_factory", factory=True, workers=workers, **options)
        else:
            uvicorn.run(create_app(settings), **options)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
