"""A config file that is not a config file: start-up stops with one line naming it, never a
traceback, a hang on an endless read or memory filled by one.

Before: arrays or inline tables nested a few thousand deep made tomllib recurse past Python's
limit, and `check-config` / `serve` died with a RecursionError traceback; `--config /dev/zero`
read until memory ran out. Checked with real `condaproxy check-config` and `serve` processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.integration

DEPTH = 5000


def nested_arrays(path: Path) -> str:
    path.write_text("[cache]\nrepodata_ttl = " + "[" * DEPTH + "1" + "]" * DEPTH + "\n")
    return str(path)


def nested_tables(path: Path) -> str:
    path.write_text("[cache]\nrepodata_ttl = " + "{a = " * DEPTH + "1" + "}" * DEPTH + "\n")
    return str(path)


def nested_headers(path: Path) -> str:
    path.write_text("x = " + "[{a = " * DEPTH + "1" + "}]" * DEPTH + "\n")
    return str(path)


def endless(_: Path) -> str:
    return "/dev/zero"


def too_big(path: Path) -> str:
    path.write_text('[cache]\npath = "./cache"\n' + "# padding\n" * 200_000)
    return str(path)


def a_directory(path: Path) -> str:
    path.mkdir()
    return str(path)


SHAPES = {
    "arrays nested 5000 deep": (nested_arrays, "nested too deeply"),
    "inline tables nested 5000 deep": (nested_tables, "nested too deeply"),
    "arrays of tables nested 5000 deep": (nested_headers, "nested too deeply"),
    "/dev/zero": (endless, "larger than"),
    "2 MB of comments": (too_big, "larger than"),
    "a directory": (a_directory, "cannot read config file"),
}


@pytest.mark.parametrize("command", ["check-config", "serve"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_config_that_is_no_config_is_one_line_naming_it(
    tmp_path: Path, shape: str, command: str
) -> None:
    make, said = SHAPES[shape]
    config = make(tmp_path / "proxy.toml")
    args = [command, "--config", config] + (["--port", "0"] if command == "serve" else [])
    result = subprocess.run(
        [sys.executable, "-m", "condaproxy", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CONDAPROXY_CACHE_PATH": str(tmp_path / "cache")},
    )
    assert result.returncode == 2, (result.returncode, result.stderr[-500:])
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert config in line and said in line, line


def test_a_list_from_the_environment_nested_thousands_deep_is_one_line(tmp_path: Path) -> None:
    """A list override is read as a TOML array; nested 5000 deep it was a RecursionError."""
    config = tmp_path / "proxy.toml"
    config.write_text("")
    var = "CONDAPROXY_SERVER_TRUSTED_PROXIES"
    result = subprocess.run(
        [sys.executable, "-m", "condaproxy", "check-config", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, var: "[" * DEPTH + "]" * DEPTH},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-300:]
    [line] = result.stderr.strip().splitlines()
    assert "server.trusted_proxies" in line and var in line and "nested too deeply" in line
