"""Every curl command the README shows, run as written (in document order, through bash and
the real curl) against a proxy configured like the README's examples: channels `conda-forge`
and `team` over a real upstream, an upload token and an admin token. A command the proxy
answers with 4xx/5xx, or that no longer parses, fails here before a reader finds out."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.channel import Pkg, build_package, index_channel
from tests.support.clients import rattler_install
from tests.support.processes import ROOT, Upstream

pytestmark = pytest.mark.integration

README = ROOT / "README.md"
UPLOAD_TOKEN = "readme-ci-token-1"
ADMIN_TOKEN = "readme-admin-token-2"
README_ORIGIN = "http://localhost:8080"

# What the README's commands name: conda-forge's numpy and pandas (purged and prefetched),
# the team's mytool and lib (uploaded, listed, deleted).
UPSTREAM_PACKAGES = (
    Pkg("numpy", "2.1.0", "py312h0_0", "linux-64"),
    Pkg("numpy", "1.26.4", "py312h0_0", "linux-64"),
    Pkg("pandas", "2.2.3", "py312h0_0", "linux-64", ("numpy >=1.26",)),
)
UPLOADS = (
    Pkg("mytool", "1.0", "h0", "linux-64", ("numpy",)),
    Pkg("mytool", "1.1", "h0", "linux-64", ("numpy", "lib")),
    Pkg("lib", "2.0", "0", "noarch", ext=".tar.bz2"),
)


@dataclass(frozen=True)
class Example:
    line: int
    command: str


def readme_commands(text: str) -> tuple[list[str], list[Example]]:
    """The shell variable assignments and the curl commands of the README's bash blocks, with
    continuation lines joined and trailing comments dropped."""
    assignments: list[str] = []
    examples: list[Example] = []
    in_bash = False
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.startswith("```"):
            in_bash = raw.strip() == "```bash"
            continue
        if not in_bash:
            continue
        line = raw.strip()
        if pending:
            pending += " " + line
        elif line.startswith("curl ") or re.match(r"^[A-Z_]+=", line):
            pending, start = line, number
        else:
            continue
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        command = re.sub(r"\s+#.*$", "", pending)
        pending = ""
        if command.startswith("curl "):
            examples.append(Example(start, command))
        else:
            assignments.append(command)
    return assignments, examples


def test_the_readme_parser_finds_what_a_reader_copies() -> None:
    text = (
        "```bash\n"
        'H="X-API-Key: $T"\n'
        "curl -X POST \\\n  http://localhost:8080/a   # a comment\n"
        "pixi add x\n"
        "```\n"
        "```toml\ncurl = 1\n```\n"
    )
    assignments, examples = readme_commands(text)
    assert assignments == ['H="X-API-Key: $T"']
    assert examples == [Example(3, "curl -X POST http://localhost:8080/a")]


@pytest.fixture(scope="module")
def readme_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Upstream, Path]:
    base = tmp_path_factory.mktemp("readme")
    channel = base / "conda-forge"
    for pkg in UPSTREAM_PACKAGES:
        build_package(pkg, base / "work", channel)
    index_channel(channel)
    files = base / "files"  # the reader's working directory: the files the commands upload
    files.mkdir()
    for pkg in UPLOADS:
        built = build_package(pkg, base / "work", base / "built")
        shutil.copy(built, files / built.name)
    server = Upstream(channel).start()
    yield server, files
    server.stop()


def run_example(
    example: Example, assignments: list[str], proxy_url: str, cwd: Path
) -> subprocess.CompletedProcess[str]:
    script = "\n".join(
        [
            "set -euo pipefail",
            # As the reader would run it, but failing on a 4xx/5xx answer and quiet otherwise.
            'curl() { command curl --silent --show-error --fail-with-body --max-time 60 "$@"; }',
            *assignments,
            example.command.replace(README_ORIGIN, proxy_url),
        ]
    )
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "CI_UPLOAD_TOKEN": UPLOAD_TOKEN,
        "ADMIN_TOKEN": ADMIN_TOKEN,
    }
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=90
    )


def test_every_curl_command_in_the_readme_works_as_written(
    readme_world, start_proxy, tmp_path
) -> None:
    upstream, files = readme_world
    proxy = start_proxy(
        {"conda-forge": {"upstream": upstream.url}, "team": {"upstream": upstream.url}},
        tokens={
            "ci": {"token": UPLOAD_TOKEN, "roles": {"team": "write"}},
            "ops": {"token": ADMIN_TOKEN, "roles": {"*": "admin"}},
        },
    )
    assignments, examples = readme_commands(README.read_text())
    assert len(examples) >= 15, "the README's curl examples went missing"
    targets = {m for e in examples for m in re.findall(r"localhost:\d+", e.command)}
    assert targets <= {"localhost:8080"}, f"examples aimed elsewhere: {targets}"

    # A reader has installed something before purging it: numpy is in the cache.
    first = httpx.get(f"{proxy.url}/conda-forge/linux-64/numpy-2.1.0-py312h0_0.conda", timeout=30)
    assert first.status_code == 200

    outputs: dict[int, str] = {}
    for example in examples:
        done = run_example(example, assignments, proxy.url, files)
        assert done.returncode == 0, (
            f"README line {example.line}: {example.command}\n"
            f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
        outputs[example.line] = done.stdout

    by_path = {e.command: outputs[e.line] for e in examples}
    listing = next(out for cmd, out in by_path.items() if cmd.endswith("/team/packages"))
    listed = {p["filename"] for p in json.loads(listing)["packages"]}
    assert listed == {"mytool-1.0-h0.conda", "mytool-1.1-h0.conda", "lib-2.0-0.tar.bz2"}
    stats = next(out for cmd, out in by_path.items() if cmd.endswith("/api/cache/stats"))
    assert "conda-forge" in json.dumps(json.loads(stats))
    metrics = next(out for cmd, out in by_path.items() if cmd.endswith("/metrics"))
    assert "condaproxy_requests_total" in metrics

    # After the README's sequence: the deleted upload is gone, the other is installable
    # through the one channel URL, with its conda-forge dependency.
    gone = httpx.get(f"{proxy.url}/team/linux-64/mytool-1.0-h0.conda", timeout=30)
    assert gone.status_code == 404
    result = rattler_install(f"{proxy.url}/team", tmp_path / "install", True, "mytool")
    assert result["ok"], result.get("trace")
    installed = {r["name"]: r["version"] for r in result["records"]}
    assert installed == {"mytool": "1.1", "lib": "2.0", "numpy": "2.1.0"}
