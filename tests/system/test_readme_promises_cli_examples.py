"""README "Operating it": every `condaproxy` admin command it shows (stats, purge, prefetch),
run as written through bash, with the `export` line above them, against a proxy configured
like the README's examples. A command the CLI no longer parses, or that the proxy refuses,
fails here before a reader finds out; and each prints the JSON the README says it prints."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.processes import ROOT
from tests.system.test_readme_examples import (
    ADMIN_TOKEN,
    README,
    README_ORIGIN,
    UPLOAD_TOKEN,
    readme_world,
)

pytestmark = pytest.mark.integration
__all__ = ["readme_world"]


def readme_cli_lines(text: str) -> tuple[list[str], list[tuple[int, str]]]:
    """The `export` lines and the admin `condaproxy` commands of the README's bash blocks."""
    exports: list[str] = []
    commands: list[tuple[int, str]] = []
    in_bash = False
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.startswith("```"):
            in_bash = raw.strip() == "```bash"
            continue
        line = raw.split("  #", 1)[0].strip()
        if not in_bash:
            continue
        if line.startswith("export CONDAPROXY_"):
            exports.append(line)
        elif line.startswith("condaproxy ") and line.split()[1] in {"stats", "purge", "prefetch"}:
            commands.append((number, line))
    return exports, commands


def test_every_admin_cli_command_in_the_readme_works_as_written(readme_world, start_proxy) -> None:
    upstream, files = readme_world
    proxy = start_proxy(
        {"conda-forge": {"upstream": upstream.url}},
        tokens={"ops": {"token": ADMIN_TOKEN, "roles": {"*": "admin"}}},
    )
    exports, commands = readme_cli_lines(README.read_text())
    assert exports and len(commands) >= 5, "the README's CLI examples went missing"
    kinds = {c.split()[1] for _, c in commands}
    assert kinds == {"stats", "purge", "prefetch"}
    for number, command in commands:
        script = "\n".join(
            [
                "set -euo pipefail",
                # This tree's condaproxy, as the installed script would run it.
                f'condaproxy() {{ PYTHONPATH="{ROOT}" "{sys.executable}" -m condaproxy "$@"; }}',
                *(e.replace(README_ORIGIN, proxy.url) for e in exports),
                command,
            ]
        )
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "CI_UPLOAD_TOKEN": UPLOAD_TOKEN,
        }
        done = subprocess.run(
            ["bash", "-c", script], cwd=files, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, (
            f"README line {number}: {command}\nexit {done.returncode}\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
        answer = json.loads(done.stdout)
        if command.split()[1] == "prefetch":
            assert answer["state"] == "done" and not answer["failures"], answer
            assert answer["total"] >= 2, answer  # pandas and the numpy it depends on
        elif command.split()[1] == "purge":
            assert set(answer["removed"]) == {"files", "metadata", "bytes"}, answer
        else:
            assert "conda-forge" in answer["channels"], answer
