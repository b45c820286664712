"""The image as shipped: the Dockerfile built by podman, run, and used by a real conda client.

No registry is reachable here, so the Dockerfile's base (`ARG PYTHON_IMAGE`) is a local Debian
of the same release with python3 and pip (tests/support/podman.py); everything after `FROM` is
the Dockerfile as shipped, pip installing from the lock. Nothing is skipped: a machine that
cannot build or run a container fails these tests with the engine's own error.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.podman import (
    BaseSpec,
    EngineError,
    Podman,
    base_tarball,
    debian_mirror,
    dockerfile_base,
    ensure_tools,
)
from tests.support.processes import ROOT, free_port, write_config
from tests.test_e2e_rattler import rattler_install

DOCKERFILE = ROOT / "Dockerfile"
IMAGE = "localhost/condaproxy:under-test"
BASE = "localhost/condaproxy-test-base:latest"
UID = 10001


@dataclass
class Built:
    podman: Podman
    image: str
    build_seconds: float

    def config(self) -> dict[str, object]:
        image = self.podman.inspect("image", self.image)
        config = dict(image["Config"])  # type: ignore[call-overload]
        # Docker keeps the HEALTHCHECK in Config, podman beside it.
        config.setdefault("Healthcheck", image.get("Healthcheck"))
        return config

    def healthcheck(self, container: str, *env: str) -> subprocess.CompletedProcess[str]:
        """The image's own HEALTHCHECK command, run in the container as the engine would."""
        kind, *command = self.config()["Healthcheck"]["Test"]  # type: ignore[index]
        if kind == "CMD-SHELL":
            command = ["/bin/sh", "-c", *command]
        flags = [f for e in env for f in ("-e", e)]
        return self.podman.attempt("exec", *flags, container, *command)

    def logs(self, container: str) -> str:
        proc = self.podman.attempt("logs", container)
        return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    podman: Podman | None = None
    try:
        ensure_tools()
        podman = Podman()
        spec = BaseSpec.of(dockerfile_base(DOCKERFILE))
        tarball = base_tarball(spec, debian_mirror(), tmp_path_factory.mktemp("base"))
        podman.load_base(tarball, BASE)
        seconds = podman.build(ROOT, IMAGE, {"PYTHON_IMAGE": BASE})
    except EngineError as exc:
        if podman is not None:
            podman.close()
        pytest.fail(f"cannot build the image with a container engine:\n{exc}", pytrace=False)
    try:
        yield Built(podman, IMAGE, seconds)
    finally:
        podman.close()


def wait_healthy(built: Built, name: str, url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        state = built.podman.inspect("container", name)["State"]
        if not state["Running"]:  # type: ignore[index]
            pytest.fail(f"container {name} exited: {state}\n{built.logs(name)[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"{url}/healthz did not answer within {seconds}s\n{built.logs(name)[-3000:]}")


@pytest.mark.container
def test_image_runs_as_documented(built: Built) -> None:
    config = built.config()
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["condaproxy"] and config["Cmd"] == ["serve"]
    assert "8080/tcp" in config["ExposedPorts"]  # type: ignore[operator]
    assert "/var/cache/condaproxy" in config["Volumes"]  # type: ignore[operator]
    # The image's defaults live in its proxy.toml: no CONDAPROXY_* variable could override a
    # mounted config behind the user's back.
    env = dict(item.split("=", 1) for item in config["Env"])  # type: ignore[attr-defined]
    assert {k for k in env if k.startswith("CONDAPROXY_")} == {"CONDAPROXY_CONFIG"}
    assert env["CONDAPROXY_CONFIG"] == "/etc/condaproxy/proxy.toml"
    assert config["Healthcheck"]["Test"][0] in {"CMD", "CMD-SHELL"}  # type: ignore[index]


@pytest.mark.container
def test_mounted_config_is_taken_as_written_and_a_client_installs_through_the_container(
    built: Built, upstream, tmp_path: Path
) -> None:
    port = free_port()
    etc, cache = tmp_path / "etc", tmp_path / "cache"
    etc.mkdir()
    cache.mkdir()
    os.chown(cache, UID, UID)
    write_config(
        etc / "proxy.toml",
        Path("/var/cache/condaproxy"),
        {"local": {"upstream": upstream.url}},
        ttl=0,
        extra=f'\n[server]\nhost = "127.0.0.1"\nport = {port}\n',
    )
    name = f"condaproxy-mounted-{port}"
    mounts = ["-v", f"{etc}:/etc/condaproxy:ro", "-v", f"{cache}:/var/cache/condaproxy"]
    built.podman.start(name, built.image, *mounts)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(built, name, url)

    channel = f"{url}/local"
    result = rattler_install(channel, tmp_path / "client", True, "datatool")
    assert result["ok"], result.get("trace")
    assert {r["name"] for r in result["records"]} == {"datatool", "libcore", "libzlib", "pyutil"}
    assert all(r["url"].startswith(channel + "/") for r in result["records"])
    assert (tmp_path / "client/prefix/share/datatool/1.0.txt").is_file()
    # The packages came from the upstream once, and now sit in the mounted volume, written by
    # the image's non-root user.
    assert upstream.count("GET", "/linux-64/datatool-1.0-h2.conda") == 1
    written = [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size > 0]
    assert written and all(p.stat().st_uid == UID for p in written)

    assert built.healthcheck(name).returncode == 0
    built.podman("stop", "-t", "20", name, timeout=60)
    assert built.podman.inspect("container", name)["State"]["ExitCode"] == 0  # type: ignore[index]


@pytest.mark.container
def test_environment_overrides_the_image_config_and_the_healthcheck_follows_the_port(
    built: Built,
) -> None:
    port = free_port()
    name = f"condaproxy-env-{port}"
    env = ["-e", "CONDAPROXY_SERVER_HOST=127.0.0.1", "-e", f"CONDAPROXY_SERVER_PORT={port}"]
    built.podman.start(name, built.image, *env)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(built, name, url)
    ready = httpx.get(url + "/readyz", timeout=5)
    assert ready.status_code == 200, ready.text
    channels = httpx.get(url + "/no-such-channel/noarch/repodata.json", timeout=5).json()
    assert "conda-forge" in str(channels), "the image's own proxy.toml was loaded"

    health = built.healthcheck(name)
    assert health.returncode == 0, health.stderr
    # The probe reads the port from the configuration: pointed elsewhere, it fails.
    elsewhere = built.healthcheck(name, f"CONDAPROXY_SERVER_PORT={free_port()}")
    assert elsewhere.returncode != 0
    assert "Connection refused" in elsewhere.stderr


@pytest.mark.container
def test_a_mistyped_variable_stops_the_container_with_one_line(built: Built) -> None:
    proc = built.podman.attempt("run", "--rm", "-e", "CONDAPROXY_SERVR_PORT=9000", built.image)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "CONDAPROXY_SERVR_PORT" in proc.stderr
    assert "Traceback" not in proc.stderr


# The lock files: checked without a container engine.

LOCKS = {"requirements.lock": "project", "requirements-build.lock": "build-system"}


def locked(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of --hash lines) for each pin of a `uv pip compile` lock."""
    pins: dict[str, tuple[str, int]] = {}
    current = None
    for line in path.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)", line)
        if pin:
            current = canonicalize_name(pin.group(1))
            pins[current] = (pin.group(2), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
    return pins


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_pins_every_requirement_by_hash(lock: str) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = (
        pyproject["project"]["dependencies"]
        if LOCKS[lock] == "project"
        else pyproject["build-system"]["requires"]
    )
    pins = locked(ROOT / lock)
    assert pins and all(hashes > 0 for _, hashes in pins.values()), "a pin without --hash"
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock} does not pin {name}: regenerate it (see its header)"
        assert requirement.specifier.contains(pins[name][0]), (
            f"{lock} pins {name}=={pins[name][0]}, outside pyproject's {requirement}"
        )
    # The Dockerfile installs from the locks, checking every hash.
    install = rf"pip install --require-hashes --only-binary :all: -r (/tmp/)?{re.escape(lock)}\b"
    assert re.search(install, DOCKERFILE.read_text())
