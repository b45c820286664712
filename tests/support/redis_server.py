"""A real Redis for the cluster tests: Debian's `redis-server`, installed with apt when the
machine lacks it (as CI's fresh machines do), started on a free loopback port, without
persistence. A binary that cannot be installed fails the fixture with the install hint."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field

from tests.support.processes import free_port

EPHEMERAL = ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
HINT = "apt-get install -y --no-install-recommends redis-server"


def ensure_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "redis-server"]

    def run(cmd: list[str]) -> int:
        return subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode

    if run(install) != 0:  # a fresh machine may have no package lists yet
        run(["apt-get", "update", "-q"])
        run(install)
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError(f"redis-server is missing and could not be installed: run `{HINT}`")
    return found


@dataclass
class RedisServer:
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = ensure_redis_server()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", *EPHEMERAL],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
