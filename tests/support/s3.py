"""A real S3 server for the cluster tests: moto's, as a process on a free loopback port.

moto keeps its buckets in memory, so an outage is simulated with SIGSTOP / SIGCONT (the state
survives), never by killing it. Each test gets a bucket of its own.
"""

from __future__ import annotations

import http.server
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.config
import httpx

from tests.support.processes import free_port, toml_value

KEY_ID = "condaproxy-test-key"
SECRET = "condaproxy-test-secret-value"


@dataclass
class S3Server:
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("moto server exited (is moto[server] installed?)")
            try:
                httpx.get(self.url + "/", timeout=1)
                return self
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            config=botocore.config.Config(s3={"addressing_style": "path"}),
        )

    def new_bucket(self) -> str:
        name = f"cp-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        listed = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for o in listed.get("Contents", []))


def storage_section(server: S3Server, bucket: str, prefix: str = "prod", **extra: object) -> str:
    """A [storage] table for proxy.toml, credentials by `env:` reference."""
    lines = [
        "[storage]",
        f'url = "s3://{bucket}/{prefix}"',
        f'endpoint = "{server.url}"',
        "allow_http = true",
        'access_key_id = "env:TEST_S3_KEY_ID"',
        'secret_access_key = "env:TEST_S3_SECRET"',
        "connect_timeout = 1",
        "timeout = 2",
        "retry_after = 2",
    ]
    lines += [f"{k} = {toml_value(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


STORAGE_ENV = {"TEST_S3_KEY_ID": KEY_ID, "TEST_S3_SECRET": SECRET}


class Forwarder:
    """A store in front of `target` (moto) that forwards every request, minus the headers in
    DROPPED, and sends the answer back through `reply`: subclasses change one of the two."""

    DROPPED = frozenset({"host", "content-length", "connection", "transfer-encoding"})
    PROTOCOL = "HTTP/1.0"

    def __init__(self, target: str) -> None:
        self.target = target
        self.port = free_port()
        handler = self._handler()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Any:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reply(self, handler: http.server.BaseHTTPRequestHandler, got: httpx.Response) -> None:
        """Send the target's answer: its status, headers and whole body."""
        handler.send_response(got.status_code)
        for k, v in got.headers.items():
            if k.lower() not in {"content-length", "transfer-encoding", "connection"}:
                handler.send_header(k, v)
        handler.send_header("content-length", str(len(got.content)))
        handler.end_headers()
        handler.wfile.write(got.content)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = outer.PROTOCOL

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in outer.DROPPED}
                got = httpx.request(
                    self.command, outer.target + self.path, headers=headers, content=body
                )
                outer.reply(self, got)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler


class IgnoringPreconditions(Forwarder):
    """A store that drops If-Match / If-None-Match before forwarding: one that accepts every
    conditional write, as some S3-compatible stores do."""

    DROPPED = Forwarder.DROPPED | {"if-match", "if-none-match"}
