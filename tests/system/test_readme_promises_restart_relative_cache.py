"""README "Quick start": `condaproxy serve` serves the shipped proxy.toml "with the cache in
`./cache`". The first start worked; every later one, once the upload index existed, died with a
traceback (`ValueError: relative path can't be expressed as a file URI`) from the check of the
upload index at start: a restart of the quick start's proxy never served again. Any relative
`cache.path` (from the file or from CONDAPROXY_CACHE_PATH) must start, stop and start again,
with its uploads and cached files kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package
from tests.support.processes import ROOT, free_port, wait_http

pytestmark = pytest.mark.integration

WRITER = "relative-writer-token-1"
PKG = Pkg("mytool", "1.0", "h0", "linux-64")
# How a reader writes a cache path relative to where `condaproxy serve` runs.
SPELLINGS = {
    "shipped": ("./cache", {}),
    "bare": ("cache", {}),
    "nested": ("./var/../cache", {}),
    "environment": ("/nonexistent/overridden", {"CONDAPROXY_CACHE_PATH": "./cache"}),
}


def serve(workdir: Path, env: dict[str, str], workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "condaproxy", "serve", "--port", str(port)]
    with (workdir / f"serve-{port}.log").open("ab") as log:  # the child keeps its own
        proc = subprocess.Popen(
            [*command, "--workers", str(workers)],
            cwd=workdir,  # ./proxy.toml and a relative cache.path, as the quick start runs it
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", proc)
    return proc, url


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == 0


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_a_relative_cache_path_serves_again_after_a_restart(
    tmp_path: Path, spelling: str, workers: int
) -> None:
    path, env = SPELLINGS[spelling]
    workdir = tmp_path / "here"
    (workdir / "var").mkdir(parents=True)
    (workdir / "proxy.toml").write_text(
        f'[cache]\npath = "{path}"\n[channels.team]\n'
        f'[tokens.ci]\ntoken = "{WRITER}"\nroles = {{ team = "write" }}\n'
    )
    package = build_package(PKG, tmp_path / "work", tmp_path / "built")
    proc, url = serve(workdir, env, workers)
    try:
        with package.open("rb") as f:
            answer = httpx.post(
                f"{url}/api/channels/team/files",
                files={"files": (package.name, f)},
                headers={"x-api-key": WRITER},
                timeout=30,
            )
        assert answer.status_code == 201, answer.text
    finally:
        stop(proc)
    assert (workdir / "cache" / "uploads").is_dir()  # relative to where serve ran

    for _ in range(2):  # a restart, and another
        proc, url = serve(workdir, env, workers)
        try:
            got = httpx.get(f"{url}/team/linux-64/{PKG.filename}", timeout=30)
            assert got.status_code == 200 and got.content == package.read_bytes()
            assert httpx.get(url + "/readyz", timeout=10).status_code == 200
        finally:
            stop(proc)
