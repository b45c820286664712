"""The command line: `condaproxy serve | check-config | token new | purge | prefetch | stats`.

`serve` imports the app only after the metrics directory is set up: prometheus-client chooses
its multiprocess mode when it is first imported. The admin commands are thin clients of the
admin API (ops/client.py). Exit codes: 0 ok, 1 the proxy refused or failed, 2 bad config/usage.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import shutil
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

from .cache.heap import give_back_big_buffers
from .rules.names import hashed_name
from .rules.redact import Redactor, upstream_identity
from .settings import (
    CONFIG_ENV,
    ConfigError,
    Settings,
    check_cache_path,
    load_settings,
    with_server_options,
)

SHARED_MEMORY = Path("/dev/shm")


def package_version() -> str:
    """One source: condaproxy/__init__.py (pyproject reads its version from there too)."""
    from . import __version__

    return __version__


METRICS_PREFIX = "condaproxy-metrics-"
METRICS_OWNER = "owner.lock"
_metrics_owner: list[int] = []  # the flock held on this serve's metrics directory


def prepare_metrics_dir(cache_path: Path) -> Path:
    """An empty directory for prometheus-client's multiprocess mode, named before anything
    imports prometheus-client (it picks its mode at import) and before workers start.

    It lives in shared memory where there is some, not on the cache's disk: prometheus-client
    writes its values through mmap, and a store that fills its disk must not take the metrics
    (or, by SIGBUS, the process) down with it.

    It is this `serve`'s own, not the cache path's: a second `serve` on the same cache (which
    the locks allow) wiped the first one's directory at start and at stop, after which the
    first one's /metrics was a 500 and a worker it restarted died at import, again and again;
    meanwhile each counted the other's requests. The directory is made under a temporary name
    with a flock held on its owner file for this process's life, then renamed into place; a
    start removes every such directory whose flock nobody holds (a `serve` killed -9)."""
    tag = hashed_name(str(cache_path.resolve()))
    if os.access(SHARED_MEMORY, os.W_OK):
        base, prefix = SHARED_MEMORY, f"{METRICS_PREFIX}{tag}-"
    else:
        base, prefix = cache_path / "metrics", ""
    base.mkdir(parents=True, exist_ok=True)
    _sweep_metrics_dirs(base, METRICS_PREFIX if prefix else "")
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    making = base / f".making-{METRICS_PREFIX}{token}"
    making.mkdir()
    fd = os.open(making / METRICS_OWNER, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    directory = base / f"{prefix}{token}"
    os.rename(making, directory)
    _metrics_owner.append(fd)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


def _sweep_metrics_dirs(base: Path, prefix: str) -> None:
    """Metrics directories in `base` whose owner is gone; never one a live `serve` holds, nor
    anything not named as ours (/dev/shm is everyone's)."""
    for entry in base.iterdir():
        owner = entry / METRICS_OWNER
        if entry.name.startswith(".making-") or not entry.name.startswith(prefix):
            continue  # one being made is not locked yet
        if entry.is_symlink() or not os.path.isfile(owner):
            continue
        try:
            fd = os.open(owner, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # held: a live serve's
        finally:
            os.close(fd)
        shutil.rmtree(entry, ignore_errors=True)


def release_metrics_dir(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    while _metrics_owner:
        os.close(_metrics_owner.pop())


def app_factory() -> object:
    """For uvicorn workers (`--workers N` imports the app again in each process)."""
    from .web.app import create_app
    from .web.logs import configure_logging

    give_back_big_buffers()
    settings = load_settings(os.environ.get(CONFIG_ENV))
    configure_logging(Redactor(settings.secrets()), settings.log.level, settings.log.format)
    return create_app(settings)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="condaproxy", description="Caching proxy for conda channels"
    )
    parser.add_argument("--version", action="version", version=f"condaproxy {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    config_help = f"config file (default: ${CONFIG_ENV} or ./proxy.toml)"

    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", help=config_help)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)

    check = sub.add_parser("check-config", help="validate a config; print what it means")
    check.add_argument("--config", help=config_help)

    token = sub.add_parser("token", help="proxy tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    new = token_sub.add_parser("new", help="print a new token every conda client can carry")
    new.add_argument(
        "--length", type=_token_length, default=40, help="16 to 1024 characters (default 40)"
    )

    from .ops.client import DEFAULT_URL, TOKEN_ENV, URL_ENV

    def admin(name: str, text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--url", default=os.environ.get(URL_ENV, DEFAULT_URL), help=f"${URL_ENV}")
        cmd.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=f"${TOKEN_ENV}")
        return cmd

    purge = admin("purge", "purge cached files and metadata (never uploads)")
    purge.add_argument("scope", nargs="?", default="", help="<channel>[/<subdir>[/<file>]]")
    purge.add_argument("--package", help="every file of this package name")
    purge.add_argument("--metadata-only", action="store_true")
    admin("stats", "what the cache holds, per channel")
    prefetch = admin("prefetch", "warm the cache with files or match specs")
    prefetch.add_argument("channel")
    prefetch.add_argument("subdir")
    prefetch.add_argument("packages", nargs="+", help="file names or match specs")
    prefetch.add_argument("--with-dependencies", action="store_true")
    prefetch.add_argument("--no-wait", action="store_true", help="submit and return")
    return parser


def _token_length(text: str) -> int:
    """A token long enough to guess no sooner than a peer token (16+), and short enough for a
    header line: `--length 0` would print an empty token, which no config accepts."""
    try:
        length = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 16 <= length <= 1024:
        raise argparse.ArgumentTypeError(f"must be 16 to 1024, got {length}")
    return length


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "token":
        from .ops.config_check import new_token

        print(new_token(args.length))
        return 0
    if args.command in ("purge", "stats", "prefetch"):
        return _admin(args)
    try:
        settings = load_settings(args.config)
        if args.command == "serve":
            settings = with_server_options(
                settings, host=args.host, port=args.port, workers=args.workers
            )
        check_cache_path(settings)
        if args.command == "serve":
            _check_cache_owner(settings)
            _check_upload_index(settings)
            _check_index_opens(settings)
        if args.command == "serve" and settings.storage is not None:
            _check_storage(settings)
    except ConfigError as exc:
        print(f"condaproxy: config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        return _check_config(settings)
    return _serve(args, settings)


def _check_upload_index(settings: Settings) -> None:
    """An upload index that is no database (garbage, cut short) stops start-up with one line
    saying so, rather than a traceback from every worker."""
    from .storage.uploads import damaged_index

    why = damaged_index(settings.cache.path / "uploads")
    if why is not None:
        raise ConfigError(
            f"{settings.source}: 'cache.path' {str(settings.cache.path)!r}: the upload index "
            f"uploads/index/cache.db is damaged ({why}); it is the only record of the uploads: "
            "restore it from a backup, or move cache/uploads aside to start without uploads"
        )


def _check_index_opens(settings: Settings) -> None:
    """A disk too full to make the index (a new cache on a full volume, nothing cached to
    evict) stops start-up with one line saying so, rather than a traceback from every worker.
    An index made before opens on a full disk (storage/sqlite_disk.py): the proxy then serves
    what it holds, and streams the rest uncached."""
    from .storage.blobs import BlobStore
    from .storage.sqlite_disk import IndexFull, open_diskcache

    root = settings.cache.path
    store = BlobStore(root / "blobs", root / "tmp")
    try:
        open_diskcache(root / "index", lambda: store.drop_least_recent() > 0).close()
    except IndexFull as exc:
        raise ConfigError(
            f"{settings.source}: 'cache.path' {str(root)!r}: its disk is full "
            f"({exc.strerror}) and the proxy holds nothing there it may evict: free some space"
        ) from None
    except (OSError, sqlite3.Error):
        return  # damaged, locked: each worker copes with it (sets it aside, waits)


def _check_cache_owner(settings: Settings) -> None:
    """A cache directory a running proxy uses with another upstream for one of our channels
    is refused: starting would drop that proxy's cache under it (a changed upstream is
    purged at start) and then mix both upstreams' files under one channel name."""
    from .storage.blobs import Liveness
    from .storage.index import Index

    root = settings.cache.path
    if not (root / "index").is_dir():
        return
    liveness = Liveness(root / "alive.lock")
    try:
        if liveness.alone():
            return  # nobody else runs on it: a changed upstream is simply dropped at start
        index = Index(root / "index")
        try:
            known: dict[str, str | None] = index.get_value(("upstreams",), {})
        finally:
            index.close()
    finally:
        liveness.close()
    redact = Redactor(settings.secrets())
    for name, channel in settings.channels.items():
        if name in known and upstream_identity(known[name]) != upstream_identity(channel.upstream):
            raise ConfigError(
                f"{settings.source}: 'cache.path' {str(root)!r} is in use by a running proxy "
                f"whose channel '{name}' has upstream {redact(known[name] or '(none)')!r}: stop "
                "it first, or give this configuration its own cache.path"
            )


def _check_storage(settings: Settings) -> None:
    from .storage.objectstore import check_conditional_writes

    warning = check_conditional_writes(settings, f"start-{os.getpid()}")
    if warning:
        print(
            f"condaproxy: warning: 'storage.url' {warning}{_storage_hint(warning)}", file=sys.stderr
        )


def _storage_hint(warning: str) -> str:
    """What a store's refusal at start-up most likely means in the configuration (the proxy
    still starts: a bucket that comes back, or credentials that start working, are used)."""
    if "NoSuchBucket" in warning:
        return " - the bucket does not exist (the proxy never creates it)"
    refused = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "NoCredentials")
    if any(code in warning for code in refused):
        return " - check 'storage.access_key_id' and 'storage.secret_access_key'"
    return ""


def _check_config(settings: Settings) -> int:
    from .ops.config_check import effective, warnings

    print(json.dumps(effective(settings), indent=2, sort_keys=True))
    for warning in warnings(settings):
        print(f"condaproxy: warning: {warning}", file=sys.stderr)
    print(f"condaproxy: configuration {settings.source} is ok", file=sys.stderr)
    return 0


def _admin(args: argparse.Namespace) -> int:
    from .ops.client import AdminClient, ClientError, follow_prefetch, print_json

    client = AdminClient(args.url, args.token)
    try:
        if args.command == "purge":
            print_json(client.purge(args.scope, args.package, args.metadata_only))
        elif args.command == "stats":
            print_json(client.stats())
        else:
            job = client.prefetch(args.channel, args.subdir, args.packages, args.with_dependencies)
            if not args.no_wait:
                job = follow_prefetch(client, job)
            print_json(job)
            return 0 if job.get("state") in ("done", "resolving", "fetching") else 1
    except ClientError as exc:
        print(f"condaproxy: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    host, port, workers = settings.server.host, settings.server.port, settings.server.workers
    metrics_dir = prepare_metrics_dir(settings.cache.path)
    give_back_big_buffers()

    import msgspec
    import structlog
    import uvicorn

    from .web.connection import BoundedHttpToolsProtocol
    from .web.logs import configure_logging
    from .web.occupancy import raise_descriptor_limit

    raise_descriptor_limit()  # before any worker starts: they inherit it (web/occupancy.py)

    configure_logging(Redactor(settings.secrets()), settings.log.level, settings.log.format)
    # uvicorn's own records go through our pipeline (log_config=None keeps its dictConfig off).
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": False,  # condaproxy logs every request itself, with its cache outcome
        "log_level": "warning",
        "log_config": None,
        "proxy_headers": False,  # nothing uses the client address; skip the per-request rewrite
        # SIGTERM drains in-flight responses, but not forever: a stalled client is cut off.
        "timeout_graceful_shutdown": settings.server.shutdown_timeout,
        # Request heads bounded in size and time (web/connection.py): uvicorn bounds neither.
        "http": BoundedHttpToolsProtocol,
    }
    structlog.get_logger("condaproxy.cli").info(
        "listening",
        url=f"http://{host}:{port}",
        config=os.path.abspath(settings.source),
        workers=workers,
        cache=str(settings.cache.path),
        version=package_version(),
    )
    # uvicorn drains in-flight responses on SIGTERM, then raises the signal again so that
    # the process dies of it (status -15): a stop that drained is a clean exit, status 0.
    # A random secret for this `serve`, shared by its workers (they inherit the environment):
    # keys the opaque hops that detect a cycle of upstreams (rules/loops.py). Never inherited
    # from whoever started this `serve`: two of them never share one.
    from .rules.loops import INSTANCE_SECRET_ENV

    os.environ[INSTANCE_SECRET_ENV] = secrets.token_hex(16)
    previous = signal.signal(signal.SIGTERM, _drained)
    try:
        if workers > 1:
            # Each worker builds its own app from the same file; they share the cache (and
            # know they do: cross-process locks and in-flight notes are on).
            os.environ[CONFIG_ENV] = os.path.abspath(args.config or settings.source)
            os.environ["CONDAPROXY_SERVER_WORKERS"] = str(workers)
            uvicorn.run("condaproxy.cli:app_factory", factory=True, workers=workers, **options)
        else:
            from .web.app import create_app  # only here: a supervisor of workers never serves

            server = msgspec.structs.replace(settings.server, workers=1)
            uvicorn.run(create_app(msgspec.structs.replace(settings, server=server)), **options)
    finally:
        signal.signal(signal.SIGTERM, previous)
        release_metrics_dir(metrics_dir)
    return 0


def _drained(signum: int, frame: object) -> None:
    """SIGTERM as uvicorn raises it again once it has shut down gracefully: exit cleanly."""
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
