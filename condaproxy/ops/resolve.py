"""Which files a prefetch means: match specs resolved against the cached repodata by py-rattler,
optionally with the dependency closure a client would install (a real solve).

Runs as its own short-lived process (`python -m condaproxy.ops.resolve`, JSON in on stdin, JSON
out on stdout) that leaves with os._exit: py-rattler's background threads can crash an
interpreter at exit, and the server must not share that fate.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from typing import Any

# Virtual packages a target platform is assumed to have, so that packages which need them
# (__glibc, __osx ...) can be solved for; conservative versions.
_VIRTUAL = {
    "linux": ["__unix=0=0", "__linux=5.10=0", "__glibc=2.28=0"],
    "osx": ["__unix=0=0", "__osx=13.0=0"],
    "win": ["__win=0=0"],
}


def _virtual_packages(subdir: str) -> list[Any]:
    import rattler

    arch = subdir.split("-", 1)[-1]
    archspec = {"64": "x86_64", "aarch64": "aarch64", "arm64": "arm64", "ppc64le": "ppc64le"}
    specs = [*_VIRTUAL.get(subdir.split("-", 1)[0], []), f"__archspec=1={archspec.get(arch, arch)}"]
    out = []
    for spec in specs:
        name, version, build = spec.split("=")
        out.append(
            rattler.GenericVirtualPackage(
                rattler.PackageName(name), rattler.Version(version), rattler.BuildString(build)
            )
        )
    return out


async def resolve(request: dict[str, Any]) -> list[list[str]]:
    import rattler

    channel = rattler.Channel(request["channel_url"])
    sources = [
        rattler.SparseRepoData(channel, subdir, path)
        for subdir, path in request["repodata"].items()
    ]
    specs = [rattler.MatchSpec(s) for s in request["specs"]]
    subdir = request["subdir"]
    if request.get("with_dependencies"):
        records = await rattler.solve(
            sources=sources,
            specs=specs,
            platforms=list(request["repodata"]),
            virtual_packages=_virtual_packages(subdir),
            timestamp_policy="allow-missing",
        )
        return [[r.subdir, r.file_name] for r in records]
    chosen = []
    for spec in specs:
        best = None
        for source in sources:
            for record in source.load_matching_records([spec]):
                key = (record.version, record.build_number, record.timestamp or 0)
                if best is None or key > best[0]:
                    best = (key, record)
        if best is None:
            raise LookupError(f"nothing matches '{spec}'")
        chosen.append([best[1].subdir, best[1].file_name])
    return chosen


def main() -> None:
    try:
        request = json.loads(sys.stdin.read())
        result: dict[str, Any] = {"files": asyncio.run(resolve(request))}
    except BaseException as exc:  # reported as data: the caller turns it into a job failure
        result = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
