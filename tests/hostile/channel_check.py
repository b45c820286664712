"""Is the channel still usable by everyone? One subprocess (py-rattler must leave with os._exit,
see tests/support/rattler_client.py) that installs SPEC through the shards and through plain
repodata.json, and parses each subdir's whole repodata.json as conda (and a full rattler load)
would, so a record nobody asked for still counts.

  python -m tests.hostile.channel_check CHANNEL_URL WORKDIR SPEC
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
import urllib.request


async def check(channel: str, workdir: str, spec: str) -> dict[str, object]:
    import rattler

    from tests.support.rattler_client import run

    installed = {}
    for sharded in (True, False):
        where = os.path.join(workdir, "shards" if sharded else "json")
        result = await run(channel, f"{where}/prefix", f"{where}/cache", sharded, [spec])
        installed["shards" if sharded else "repodata.json"] = [r["name"] for r in result["records"]]
    for subdir in ("linux-64", "noarch"):
        path = os.path.join(workdir, f"{subdir}-repodata.json")
        with urllib.request.urlopen(f"{channel}/{subdir}/repodata.json", timeout=30) as response:
            data = response.read()
        with open(path, "wb") as f:
            f.write(data)
        rattler.RepoData.from_path(path)
    return {"ok": True, "installed": installed}


def main() -> None:
    channel, workdir, spec = sys.argv[1:]
    try:
        result = asyncio.run(check(channel, workdir, spec))
    except BaseException as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        result["trace"] = traceback.format_exc()[-3000:]
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
