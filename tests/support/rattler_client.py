"""A real conda client run in a subprocess: py-rattler solves and installs through a channel.

py-rattler's background threads can crash the interpreter at exit after a solve or install, so
this script prints its JSON result, flushes and leaves with os._exit (PROTOCOL.md).

  python -m tests.support.rattler_client CHANNEL_URL PREFIX CACHE_DIR SHARDED SPEC...
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback


async def run(channel: str, prefix: str, cache: str, sharded: bool, specs: list[str]) -> dict:
    import rattler

    config = rattler.SourceConfig(sharded_enabled=sharded)
    gateway = rattler.Gateway(cache_dir=os.path.join(cache, "repodata"), default_config=config)
    records = await rattler.solve(
        sources=[channel],
        specs=specs,
        gateway=gateway,
        platforms=["linux-64", "noarch"],
        virtual_packages=[],
    )
    await rattler.install(
        records, target_prefix=prefix, cache_dir=os.path.join(cache, "pkgs"), show_progress=False
    )
    return {
        "ok": True,
        "records": [
            {"name": r.name.normalized, "version": str(r.version), "url": str(r.url)}
            for r in records
        ],
    }


def main() -> None:
    channel, prefix, cache, sharded, *specs = sys.argv[1:]
    try:
        result = asyncio.run(run(channel, prefix, cache, sharded == "1", specs))
    except BaseException as exc:  # report any failure as data; the exit code says it failed
        result = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "trace": traceback.format_exc(),
        }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
