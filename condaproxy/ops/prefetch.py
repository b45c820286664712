"""Warming the cache on request (an air-gapped site fills it before the cable is pulled).

A job takes file names and match specs for one channel and subdir, resolves the specs (and, if
asked, the dependency closure a client would install) against the channel's repodata, then
fetches every file into the cache in the background, a few at a time. Its progress and failures
are kept in the index, so stats from any worker show them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from ..rules.codecs import decode_json
from ..rules.errors import BadRequest, ProxyError
from ..rules.record_fields import shown
from ..rules.routing import PACKAGE_RE, SUBDIR_RE
from ..storage.index import Index

log = structlog.get_logger("condaproxy.ops.prefetch")

PARALLEL = 4
MAX_ITEMS = 10_000
# A request's JSON body: MAX_ITEMS specs of a few dozen bytes each fit many times over.
MAX_BODY = 4 << 20
KEEP_JOBS = 50


@dataclass
class PrefetchJob:
    id: str
    channel: str
    subdir: str
    items: list[str]
    with_dependencies: bool
    created_at: float
    state: str = "resolving"  # resolving | fetching | done | failed
    total: int = 0
    fetched: int = 0
    already_cached: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    finished_at: float | None = None
    owner: str = field(default_factory=lambda: process_id(os.getpid()))  # who runs it

    def public(self) -> dict[str, Any]:
        """The job as clients see it (which process runs it is nobody's business)."""
        return {k: v for k, v in self.stored().items() if k != "owner"}

    def stored(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RUNNING = ("resolving", "fetching")
INTERRUPTED = "interrupted: the proxy stopped before the job ended; submit it again"


def process_id(pid: int) -> str:
    """A process, as `<pid>:<start time>:<boot>` (Linux), so a pid used again, in this boot or
    after a reboot at the same tick, is not taken for it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            started = f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        started = "?"
    return f"{pid}:{started}:{_boot_id()}"


@functools.cache
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _alive(owner: Any) -> bool:
    if not isinstance(owner, str) or ":" not in owner:
        return False  # a job stored before owners were: from an earlier process
    pid = owner.split(":", 1)[0]
    return pid.isdigit() and process_id(int(pid)) == owner


def as_seen(job: dict[str, Any]) -> dict[str, Any]:
    """A stored job as clients see it: a job still "running" whose process is gone (stopped,
    killed) ended then, as failed; the owner is not shown."""
    seen = {k: v for k, v in job.items() if k != "owner"}
    if seen.get("state") in RUNNING and not _alive(job.get("owner")):
        seen["state"], seen["error"] = "failed", seen.get("error") or INTERRUPTED
    return seen


def decode_request(raw: bytes) -> tuple[list[str], bool]:
    """A request body as sent: JSON that is not JSON (bad UTF-8, nested deeper than it can
    be read, which json.loads answered with a RecursionError and so a 500) is a 400."""
    try:
        body = decode_json(raw)
    except ValueError:
        raise BadRequest("body is not JSON") from None
    return parse_request(body)


FIELDS = ("packages", "with_dependencies")


def parse_request(body: Any) -> tuple[list[str], bool]:
    """`["numpy >=1.26", "x-1-0.conda"]` or `{"packages": [...], "with_dependencies": true}`."""
    items: Any
    with_deps: Any
    if isinstance(body, list):
        items, with_deps = body, False
    elif isinstance(body, dict):
        # A field it would not read is refused: `"with_deps": true` (or "dependencies",
        # "package") was ignored, and the job warmed the names alone, its closure not.
        unknown = sorted(str(k) for k in body if k not in FIELDS)
        if unknown:
            raise BadRequest(
                f"{shown(unknown[0])} is not a prefetch field (the body takes 'packages' and "
                "'with_dependencies')"
            )
        items, with_deps = body.get("packages"), body.get("with_dependencies", False)
    else:
        raise BadRequest(
            "body must be a JSON list of file names or match specs, or "
            '{"packages": [...], "with_dependencies": true}'
        )
    if (
        not isinstance(items, list)
        or not items
        or not all(isinstance(i, str) and i.strip() for i in items)
    ):
        raise BadRequest("'packages' must be a non-empty list of file names or match specs")
    if len(items) > MAX_ITEMS:
        raise BadRequest(f"at most {MAX_ITEMS} items per prefetch")
    if not isinstance(with_deps, bool):
        raise BadRequest("'with_dependencies' must be true or false")
    return [i.strip() for i in items], with_deps


def as_spec(item: str) -> str:
    """A file name becomes the exact spec that selects it; a spec stays a spec."""
    match = PACKAGE_RE.match(item)
    return f"{match['name']} =={match['version']} {match['build']}" if match else item


class Prefetcher:
    def __init__(
        self,
        index: Index,
        repodata_path: Callable[[str, str], Any],
        warm: Callable[[str, str, str], Any],
        channel_url: Callable[[str], str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.index = index
        self.repodata_path = repodata_path  # async (channel, subdir) -> path of repodata.json
        self.warm = warm  # async (channel, subdir, filename) -> "hit" | "miss"
        self.channel_url = channel_url
        self.clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, channel: str, subdir: str, items: list[str], with_deps: bool) -> PrefetchJob:
        if not SUBDIR_RE.match(subdir):
            raise BadRequest(f"'{subdir}' is not a conda subdir")
        job = PrefetchJob(secrets.token_hex(8), channel, subdir, items, with_deps, self.clock())
        self._save(job)
        task = asyncio.create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    def jobs(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.index.get_value(("prefetch",), [])
        return [as_seen(j) for j in found]

    def _save(self, job: PrefetchJob) -> None:
        with self.index.transact():
            stored: list[dict[str, Any]] = self.index.get_value(("prefetch",), [])
            jobs = [j for j in stored if j["id"] != job.id]
            self.index.set_value(("prefetch",), [job.stored(), *jobs][:KEEP_JOBS])

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, job: PrefetchJob) -> None:
        try:
            files = await self._resolve(job)
            job.state, job.total = "fetching", len(files)
            self._save(job)
            limit = asyncio.Semaphore(PARALLEL)

            async def one(subdir: str, filename: str) -> None:
                async with limit:
                    try:
                        outcome = await self.warm(job.channel, subdir, filename)
                    except ProxyError as exc:
                        job.failures.append({"file": f"{subdir}/{filename}", "error": exc.message})
                    else:
                        job.fetched += 1
                        job.already_cached += outcome == "hit"
                    self._save(job)

            await asyncio.gather(*(one(s, f) for s, f in files))
            job.state = "done" if not job.failures else "failed"
        except ProxyError as exc:
            job.state, job.error = "failed", exc.message
        except asyncio.CancelledError:  # the server stops: the job ends here, and says so
            job.state, job.error, job.finished_at = "failed", INTERRUPTED, self.clock()
            with contextlib.suppress(Exception):
                self._save(job)
            raise
        except Exception as exc:  # a job never takes the server down; it reports what broke
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
        job.finished_at = self.clock()
        self._save(job)
        log.info(
            "prefetch finished",
            job=job.id,
            state=job.state,
            fetched=job.fetched,
            failures=len(job.failures),
        )

    async def _resolve(self, job: PrefetchJob) -> list[tuple[str, str]]:
        plain = [i for i in job.items if PACKAGE_RE.match(i)]
        if not job.with_dependencies and len(plain) == len(job.items):
            return [(job.subdir, f) for f in plain]
        subdirs = [job.subdir] if job.subdir == "noarch" else [job.subdir, "noarch"]
        repodata = {}
        for subdir in subdirs:
            path = await self.repodata_path(job.channel, subdir)
            if path is not None:
                repodata[subdir] = str(path)
        specs = (
            [as_spec(i) for i in job.items]
            if job.with_dependencies
            else [i for i in job.items if not PACKAGE_RE.match(i)]
        )
        request = {
            "channel_url": self.channel_url(job.channel),
            "repodata": repodata,
            "specs": specs,
            "subdir": job.subdir,
            "with_dependencies": job.with_dependencies,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "condaproxy.ops.resolve",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(proc.communicate(json.dumps(request).encode()), 300)
        result = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
        if "files" not in result:
            raise BadRequest(f"cannot resolve {specs}: {result.get('error', 'resolver failed')}")
        resolved = [(s, f) for s, f in result["files"]]
        if not job.with_dependencies:
            resolved += [(job.subdir, f) for f in plain]
        return sorted(set(resolved))
