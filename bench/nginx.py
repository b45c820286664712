"""Debian's nginx in the two roles the benchmarks need: the upstream (a static channel, with
ETags, optionally limited per connection like a network link) and the peer to beat, a
`proxy_cache` pull-through cache configured as a competent operator would.

Each instance is its own master process (`daemon off`, its own session), so it can be stopped,
wiped and restarted on an empty cache without touching the upstream, and its process group is
its whole tree for the samplers.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import free_port, group_pids, stop_group, wait_http

# Immutable by convention (PROTOCOL.md): packages, and shards (named by their own sha256).
IMMUTABLE = r"~ (\.conda|\.tar\.bz2|/shards/[0-9a-f]+\.msgpack\.zst)$"


def static_server(port: int, root: Path, limit_rate: str | None = None) -> str:
    """A channel served from disk: nginx's default strong ETag (mtime-size) and Last-Modified."""
    limit = f"limit_rate {limit_rate};" if limit_rate else ""
    return f"""
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {root};
    {limit}
  }}"""


def cache_server(port: int, zone: str, cache: Path, upstream_port: int) -> str:
    """A pull-through cache of the upstream on `upstream_port`: packages and shards valid for a
    year, metadata for 60 s (condaproxy's repodata_ttl) then revalidated with the validators the
    upstream sent; one upstream fetch per key at a time (the lock); stale copies when the
    upstream fails or while an entry is being refreshed."""
    return f"""
  proxy_cache_path {cache} levels=1:2 keys_zone={zone}:64m max_size=200g inactive=365d
                   use_temp_path=off;
  upstream {zone}_upstream {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    proxy_cache {zone};
    proxy_cache_key $uri;
    proxy_cache_lock on;
    proxy_cache_lock_timeout 120s;
    proxy_cache_lock_age 120s;
    proxy_cache_revalidate on;
    proxy_cache_use_stale error timeout updating;
    proxy_buffering on;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_read_timeout 60s;
    add_header X-Cache $upstream_cache_status;
    location {IMMUTABLE} {{
      proxy_pass http://{zone}_upstream;
      proxy_cache_valid 200 365d;
      proxy_cache_valid 404 30s;
    }}
    location / {{
      proxy_pass http://{zone}_upstream;
      proxy_cache_valid 200 60s;
      proxy_cache_valid 404 30s;
    }}
  }}"""


@dataclass
class Nginx:
    """One nginx master with the given `server` blocks (built by the functions above)."""

    name: str
    workdir: Path
    servers: list[str] = field(default_factory=list)
    workers: int = 2
    access_log: bool = False
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / f"nginx-{self.name}-access.log"

    def start(self, probe_port: int) -> Nginx:
        conf = self.workdir / f"nginx-{self.name}.conf"
        temp = self.workdir / f"nginx-{self.name}-temp"
        temp.mkdir(parents=True, exist_ok=True)
        log = f"access_log {self.log};" if self.access_log else "access_log off;"
        conf.write_text(f"""
daemon off;
user root root;
worker_processes {self.workers};
pid {self.workdir}/nginx-{self.name}.pid;
error_log {self.workdir}/nginx-{self.name}-error.log warn;
events {{ worker_connections 8192; }}
http {{
  default_type application/octet-stream;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 1000000; keepalive_timeout 120s;
  {log}
  client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi; uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;
  {"".join(self.servers)}
}}
""")
        self.proc = subprocess.Popen(
            ["nginx", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / f"nginx-{self.name}.stderr", "ab"),  # noqa: SIM115
            start_new_session=True,
        )
        wait_http(f"http://127.0.0.1:{probe_port}/", self.proc)
        return self

    def pids(self) -> list[int]:
        return group_pids(self.proc.pid) if self.proc else []

    def stop(self) -> None:
        stop_group(self.proc, signal.SIGTERM)  # nginx's fast shutdown
        self.proc = None

    def requests(self, path: str, method: str = "GET") -> int:
        """How many `method path` requests the access log holds."""
        if not self.log.exists():
            return 0
        needle = f'"{method} {path} '
        return sum(1 for line in self.log.read_text().splitlines() if needle in line)


@dataclass
class NginxCache:
    """An nginx proxy_cache in front of one or more upstream ports, started on an empty cache
    each time: `urls[upstream_port]` is the cache's URL for that upstream."""

    workdir: Path
    upstream_ports: list[int]
    workers: int = 2
    nginx: Nginx | None = None
    urls: dict[int, str] = field(default_factory=dict)

    @property
    def cache_root(self) -> Path:
        return self.workdir / "nginx-cache"

    def start(self) -> NginxCache:
        shutil.rmtree(self.cache_root, ignore_errors=True)
        self.cache_root.mkdir(parents=True)
        servers, self.urls = [], {}
        for i, upstream in enumerate(self.upstream_ports):
            port = free_port()
            servers.append(cache_server(port, f"c{i}", self.cache_root / f"c{i}", upstream))
            self.urls[upstream] = f"http://127.0.0.1:{port}"
        self.nginx = Nginx("cache", self.workdir, servers, self.workers)
        probe = int(next(iter(self.urls.values())).rsplit(":", 1)[1])
        self.nginx.start(probe)
        return self

    def pids(self) -> list[int]:
        return self.nginx.pids() if self.nginx else []

    def stop(self, keep_cache: bool = False) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        self.nginx = None
        if not keep_cache:
            shutil.rmtree(self.cache_root, ignore_errors=True)
        time.sleep(0.05)
