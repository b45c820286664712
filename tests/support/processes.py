"""Start the upstream server and the proxy as real processes on free loopback ports."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before serving {url}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@dataclass
class Upstream:
    directory: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Upstream:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.upstream_server",
                str(self.directory),
                str(self.port),
            ],
            cwd=ROOT,
        )
        wait_http(self.url + "/_stats", self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def stats(self) -> dict[str, int]:
        return dict(httpx.get(self.url + "/_stats").json())

    def count(self, method: str, path: str) -> int:
        return self.stats().get(f"{method} {path}", 0)

    def mode(self, mode: str) -> None:
        httpx.post(f"{self.url}/_mode?mode={mode}")

    def reset(self) -> None:
        httpx.post(self.url + "/_reset")

    def override(self, path: str, body: bytes = b"", status: int = 200, **spec: object) -> None:
        """Answer `path` with a hostile response of our choosing until reset()."""
        import base64

        payload = {"path": path, "status": status, "body_b64": base64.b64encode(body).decode()}
        httpx.post(self.url + "/_override", json={**payload, **spec}).raise_for_status()

    def seen(self) -> list[dict[str, object]]:
        """The last requests the upstream received: path, method, headers, raw_path."""
        return list(httpx.get(self.url + "/_seen").json())


def _limit_files(limits: tuple[int, int]) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


@dataclass
class Proxy:
    config: Path
    port: int = field(default_factory=free_port)
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    nofile: tuple[int, int] | None = None  # the file-descriptor limit (soft, hard), if set

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proxy:
        self.log_path = self.config.with_suffix(f".{self.port}.log")
        cmd = [
            sys.executable,
            "-m",
            "condaproxy",
            "serve",
            "--config",
            str(self.config),
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdout=log,
                stderr=log,
                env={**os.environ, **self.env},
                start_new_session=True,
                preexec_fn=None if self.nofile is None else partial(_limit_files, self.nofile),
            )
        try:
            wait_http(self.url + "/healthz", self.proc)
        except BaseException:
            self.stop(kill=True)  # never left running (and respawning workers) after a test
            raise
        return self

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(15)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def events_where(
        self, match: Callable[[dict[str, Any]], bool], count: int = 1, seconds: float = 10
    ) -> list[dict[str, Any]]:
        """The log events `match` selects, once at least `count` of them are written (a
        request's access event is logged just after its response is sent)."""
        deadline = time.monotonic() + seconds
        while True:
            found = [e for e in self.events() if match(e)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def events(self) -> list[dict[str, object]]:
        """The proxy's structured log events (JSON lines)."""
        found = []
        for line in self.log().splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(
    path: Path,
    cache: Path,
    channels: dict[str, dict[str, object]],
    ttl: int = 60,
    extra: str = "",
    tokens: dict[str, dict[str, object]] | None = None,
) -> Path:
    lines = [
        f'[cache]\npath = "{cache}"\nrepodata_ttl = {ttl}\nnegative_ttl = 30\n',
        extra,  # right after [cache]: bare keys extend it, a [section] starts its own
        "[upstream]\nconnect_timeout = 2\nread_timeout = 5\n",
    ]
    for section, table in (("channels", channels), ("tokens", tokens or {})):
        for name, body in table.items():
            lines.append(f"[{section}.{toml_value(name)}]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in body.items())
    path.write_text("\n".join(lines) + "\n")
    return path
