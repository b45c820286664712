"""Processes the benchmarks start and watch: condaproxy as a real server, and what /proc says
about a process tree (RSS, anonymous RSS, bytes written).

Every server is started in its own session, so its process group is its whole tree (uvicorn
workers, the spawned merge worker, nginx workers): a group id is all a sampler needs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import free_port, wait_http

__all__ = ["ROOT", "CondaProxy", "free_port", "wait_http"]
ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20


def stop_group(proc: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    """Send `sig` to a server's process group, then SIGKILL what is left after 30 s."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, sig)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def group_pids(pgid: int) -> list[int]:
    """Every live process whose process group is `pgid` (field 5 of /proc/<pid>/stat)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            found.append(int(entry))
    return found


def _status_kib(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    out = dict.fromkeys(keys, 0)
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in out:
            out[key] = int(value.split()[0]) * 1024
    return out


def memory(pids: list[int]) -> tuple[int, int, int]:
    """(total RSS, total anonymous RSS, largest anonymous RSS of one process) in bytes."""
    total = anon = largest = 0
    for pid in pids:
        status = _status_kib(pid, ("VmRSS", "RssAnon"))
        total += status["VmRSS"]
        anon += status["RssAnon"]
        largest = max(largest, status["RssAnon"])
    return total, anon, largest


def written(pids: list[int]) -> int:
    """Bytes the processes sent towards storage (/proc/<pid>/io write_bytes minus what was
    cancelled by truncating or deleting dirty pages before writeback)."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/io").read_text()
        except OSError:
            continue
        values = dict(line.split(": ") for line in text.splitlines())
        total += int(values["write_bytes"]) - int(values["cancelled_write_bytes"])
    return total


def du(path: Path) -> int:
    """Bytes allocated under `path`."""
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class CondaProxy:
    """condaproxy serving this worktree's package: `python3 -m condaproxy serve` from its root."""

    workdir: Path
    channels: dict[str, str]  # name -> upstream URL
    workers: int = 1
    extra: str = ""  # more TOML (tokens, channel options)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cache(self) -> Path:
        return self.workdir / f"condaproxy-cache-{self.port}"

    def channel_url(self, channel: str) -> str:
        return f"{self.url}/{channel}"

    def start(self) -> CondaProxy:
        """Start on an empty cache (shipped defaults but for cache path, port and channels)."""
        self.port = free_port()
        self.cache.mkdir(parents=True)
        config = self.workdir / f"condaproxy-{self.port}.toml"
        lines = [f'[cache]\npath = "{self.cache}"\n']
        for name, upstream in self.channels.items():
            lines.append(f'[channels."{name}"]\nupstream = "{upstream}"\n')
        config.write_text("\n".join(lines) + self.extra)
        with open(self.workdir / f"condaproxy-{self.port}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "condaproxy", "serve"),
                    *("--config", str(config), "--port", str(self.port)),
                    *("--workers", str(self.workers)),
                ],
                cwd=ROOT,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_http(self.url + "/healthz", self.proc)
        return self

    def pids(self) -> list[int]:
        return group_pids(self.proc.pid) if self.proc else []

    def stop(self, keep_cache: bool = False) -> None:
        stop_group(self.proc, signal.SIGTERM)
        self.proc = None
        # A stopped serve removes its metrics directory; one killed is swept by the next.
        if not keep_cache:
            shutil.rmtree(self.cache, ignore_errors=True)
