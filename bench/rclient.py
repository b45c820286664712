"""A real conda client for the benchmarks: py-rattler solves (and installs) through a channel
URL with a fresh client cache, and reports how long each step took.

py-rattler's background threads can crash the interpreter at exit (PROTOCOL.md), so this runs
as its own process, prints one JSON line, flushes and leaves with os._exit.

    python3 -m bench.rclient CHANNEL_URL WORKDIR [--no-shards] [--solve-only] SPEC...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from bench.procs import ROOT


async def run(args: argparse.Namespace) -> dict[str, object]:
    import rattler

    work = Path(args.workdir)
    config = rattler.SourceConfig(sharded_enabled=not args.no_shards)
    gateway = rattler.Gateway(cache_dir=str(work / "repodata"), default_config=config)
    t0 = time.perf_counter()
    records = await rattler.solve(
        sources=[args.channel],
        specs=args.specs,
        gateway=gateway,
        platforms=["linux-64", "noarch"],
        virtual_packages=[],
    )
    solved = time.perf_counter()
    if not args.solve_only:
        await rattler.install(
            records,
            target_prefix=str(work / "prefix"),
            cache_dir=str(work / "pkgs"),
            show_progress=False,
        )
    done = time.perf_counter()
    return {
        "ok": True,
        "solve_s": solved - t0,
        "install_s": done - solved,
        "total_s": done - t0,
        "records": len(records),
        "bytes": sum(r.size or 0 for r in records),
        "urls": [str(r.url) for r in records],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("channel")
    parser.add_argument("workdir")
    parser.add_argument("specs", nargs="+")
    parser.add_argument("--no-shards", action="store_true")
    parser.add_argument("--solve-only", action="store_true")
    args = parser.parse_args()
    try:
        result = asyncio.run(run(args))
    except BaseException as exc:  # a failure is data; the exit code says it failed
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        result["trace"] = traceback.format_exc()[-3000:]
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0 if result["ok"] else 1)


def rattler(
    channel: str,
    workdir: Path,
    specs: list[str],
    shards: bool = True,
    solve_only: bool = False,
    timeout: float = 900,
) -> dict:
    """Run the client in a subprocess on a fresh `workdir` (its caches and prefix); the result
    has `wall_s` too, the subprocess's whole life (interpreter start included)."""
    subprocess.run(["rm", "-rf", str(workdir)], check=True)
    workdir.mkdir(parents=True)
    cmd = [sys.executable, "-m", "bench.rclient", channel, str(workdir), *specs]
    cmd += ["--no-shards"] * (not shards) + ["--solve-only"] * solve_only
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"rattler client printed nothing; stderr:\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1])
    if not result["ok"]:
        raise RuntimeError(f"rattler through {channel} failed: {result['error']}")
    result["wall_s"] = wall
    subprocess.run(["rm", "-rf", str(workdir)], check=True)
    return result


if __name__ == "__main__":
    main()
