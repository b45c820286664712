"""Build and run the project's Dockerfile with rootful podman on a machine that reaches no
container registry.

What the machine needs is installed here (Debian's podman, crun and debootstrap); nothing is
assumed installed by hand. The Dockerfile's base image (its `PYTHON_IMAGE` build argument) is
replaced by a minimal Debian of the same release with python3 and pip, bootstrapped with
debootstrap from the machine's Debian mirror and kept as a tarball in a cache directory keyed by
everything that went into it, so only the first run pays for it. Everything else (storage,
run state, events, temp files) lives in one temporary directory that `close()` removes.

The settings are those this kind of machine needs: no cgroups (crun cannot use a cgroup v1/v2
hybrid host, so /sys/fs/cgroup/unified is unmounted in a private mount namespace for every
podman call), the host's network namespace (containers listen on the host's loopback), explicit
ulimits (podman cannot raise its own), and chroot isolation for builds. Every failure raises
`EngineError` with the command and the end of its output, so a test fails with the exact error.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TOOLS = {"podman": "podman", "crun": "crun", "debootstrap": "debootstrap", "unshare": "util-linux"}
BASE_PACKAGES = ("python3", "python3-pip", "python-is-python3", "ca-certificates")
BASE_RECIPE = 1  # bump when the way the base is made changes: old cached bases are not reused
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PODMAN_NPROC_CAP = 32768  # podman lowers its own RLIMIT_NPROC to this


class EngineError(RuntimeError):
    """A container engine step failed; the message holds the command and its output."""


def run(cmd: Sequence[str], timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
    except FileNotFoundError as exc:
        raise EngineError(f"{cmd[0]}: not found ({exc})") from None
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")[-3000:] if isinstance(exc.stdout, bytes) else exc.stdout
        raise EngineError(f"timed out after {timeout}s: {' '.join(cmd)}\n{out or ''}") from None
    if proc.returncode != 0:
        raise EngineError(
            f"exit {proc.returncode}: {' '.join(cmd)}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return proc


def ensure_tools() -> None:
    """podman, crun, debootstrap: from Debian's packages when missing (as CI has nothing)."""
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    try:
        run(install, timeout=900, env=env)
    except EngineError:  # a fresh machine may have no package lists yet
        run(["apt-get", "update", "-q"], timeout=600, env=env)
        run(install, timeout=900, env=env)


def debian_mirror() -> str:
    """The machine's own Debian mirror (deb822 sources first, then sources.list)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file():
        found = re.search(r"^URIs:\s*(\S+)", sources.read_text(), re.M)
        if found:
            return found.group(1)
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        found = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+\s+main", legacy.read_text(), re.M)
        if found:
            return found.group(1)
    return DEFAULT_MIRROR


def dockerfile_base(dockerfile: Path) -> str:
    """The default of the Dockerfile's `ARG PYTHON_IMAGE=...`: the image the build starts from."""
    found = re.search(r"^ARG\s+PYTHON_IMAGE=(\S+)", dockerfile.read_text(), re.M)
    if not found:
        raise EngineError(f"{dockerfile}: no `ARG PYTHON_IMAGE=<image>` to substitute")
    return found.group(1)


@dataclass(frozen=True)
class BaseSpec:
    """What stands in for the Dockerfile's base: the Debian release its tag names (or the
    host's) and the Python version it promises, checked in the bootstrapped tree."""

    image: str
    suite: str
    python: str

    @classmethod
    def of(cls, image: str) -> BaseSpec:
        tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
        python = re.match(r"(\d+\.\d+)", tag)
        if not python:
            raise EngineError(f"{image}: the tag names no Python version (python:3.X-...)")
        release = re.search(r"-(bookworm|trixie|bullseye|forky)\b", tag)
        return cls(image, release.group(1) if release else host_codename(), python.group(1))


def host_codename() -> str:
    found = re.search(r"^VERSION_CODENAME=(\w+)", Path("/etc/os-release").read_text(), re.M)
    return found.group(1) if found else "bookworm"


def extra_ca_certificates() -> list[Path]:
    """CA certificates this machine adds to the system store (e.g. for intercepted TLS): pip in
    the image must trust what the host trusts."""
    return sorted(Path("/usr/local/share/ca-certificates").glob("**/*.crt"))


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "condaproxy-tests"


def base_tarball(spec: BaseSpec, mirror: str, scratch: Path) -> Path:
    """A root filesystem tarball standing in for `spec.image`, made once per recipe."""
    certs = extra_ca_certificates()
    key = hashlib.sha256(
        json.dumps(
            {
                "recipe": BASE_RECIPE,
                "image": spec.image,
                "suite": spec.suite,
                "mirror": mirror,
                "packages": BASE_PACKAGES,
                "certs": [hashlib.sha256(c.read_bytes()).hexdigest() for c in certs],
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    cached = cache_dir() / f"base-{spec.suite}-py{spec.python}-{key}.tar"
    if cached.is_file():
        return cached
    rootfs = scratch / "rootfs"
    include = ",".join(BASE_PACKAGES)
    cmd = ["debootstrap", "--variant=minbase", f"--include={include}", spec.suite, str(rootfs)]
    run([*cmd, mirror], timeout=900)
    if not (rootfs / f"usr/bin/python{spec.python}").exists():
        found = sorted(p.name for p in (rootfs / "usr/bin").glob("python3.*"))
        raise EngineError(
            f"Debian {spec.suite} has {found}, not the python{spec.python} that {spec.image} "
            "promises: name the Debian release in the Dockerfile's PYTHON_IMAGE tag"
        )
    for marker in (rootfs / "usr/lib").glob("python3*/EXTERNALLY-MANAGED"):
        marker.unlink()  # an image's root pip installs into the system, as python:3.X-slim's
    for cert in certs:
        shutil.copy2(cert, rootfs / "usr/local/share/ca-certificates" / cert.name)
    run(["chroot", str(rootfs), "update-ca-certificates"], timeout=120)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
        shutil.rmtree(rootfs / junk, ignore_errors=True)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.partial")
    run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], timeout=300)
    partial.replace(cached)  # whole or absent: a run cut short leaves no half tarball behind
    shutil.rmtree(rootfs, ignore_errors=True)
    for old in cached.parent.glob(f"base-{spec.suite}-py{spec.python}-*.tar"):
        if old != cached:
            old.unlink(missing_ok=True)
    return cached


def _ulimits() -> tuple[int, int]:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else nofile
    nproc = PODMAN_NPROC_CAP if nproc == resource.RLIM_INFINITY else min(nproc, PODMAN_NPROC_CAP)
    return nofile, nproc


class Podman:
    """A private podman: its own storage, run state and config under one temp directory."""

    def __init__(self, driver: str | None = None) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="condaproxy-podman-"))
        self.driver = driver or os.environ.get("CONDAPROXY_TEST_STORAGE_DRIVER", "overlay")
        (self.home / "tmp").mkdir()
        nofile, nproc = _ulimits()
        conf = self.home / "containers.conf"
        conf.write_text(
            "[containers]\n"
            'cgroups = "disabled"\n'
            'netns = "host"\n'
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{self.home}/events.log"\n'
            'runtime = "crun"\n'
            f'tmp_dir = "{self.home}/libpod"\n'
            f'static_dir = "{self.home}/storage/libpod"\n'
            f'volume_path = "{self.home}/storage/volumes"\n'
            f'image_copy_tmp_dir = "{self.home}/tmp"\n'
        )
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf), "TMPDIR": str(self.home / "tmp")}

    def command(self, *args: str) -> list[str]:
        # crun refuses a cgroup v1/v2 hybrid host: hide the v2 mount in a private namespace.
        script = 'umount /sys/fs/cgroup/unified 2>/dev/null; exec podman "$@"'
        return [
            "unshare", "-m", "--propagation", "private", "sh", "-c", script, "podman",
            "--root", str(self.home / "storage"), "--runroot", str(self.home / "run"),
            "--storage-driver", self.driver, *args,
        ]  # fmt: skip

    def __call__(self, *args: str, timeout: float = 120) -> str:
        return run(self.command(*args), timeout=timeout, env=self.env).stdout

    def attempt(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A podman call whose failure is an answer (an exit code, stderr), not an error."""
        cmd = self.command(*args)
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=self.env, check=False
        )

    def load_base(self, tarball: Path, tag: str) -> None:
        changes = ["--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]']
        self("import", *changes, str(tarball), tag, timeout=300)

    def build(self, context: Path, tag: str, build_args: dict[str, str]) -> float:
        """Build the Dockerfile as shipped (docker format keeps its HEALTHCHECK); seconds taken."""
        started = time.monotonic()
        args = [a for k, v in build_args.items() for a in ("--build-arg", f"{k}={v}")]
        self(
            "build", "--pull=never", "--format", "docker", "--isolation", "chroot",
            "--network", "host", *args, "-t", tag, str(context), timeout=900,
        )  # fmt: skip
        return time.monotonic() - started

    def inspect(self, what: str, name: str) -> dict[str, object]:
        return dict(json.loads(self(what, "inspect", name))[0])

    def start(self, name: str, image: str, *options: str, args: Sequence[str] = ()) -> None:
        """Run detached, the healthcheck left to `healthcheck run` (no systemd timers here)."""
        self("run", "-d", "--name", name, "--no-healthcheck", *options, image, *args)

    def close(self) -> None:
        """Stop and remove every container, unmount what podman left, delete everything."""
        for step in (("stop", "-a", "-t", "5"), ("rm", "-af")):
            self.attempt(*step, timeout=60)
        mounts = subprocess.run(
            ["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=False
        ).stdout.split()
        for target in sorted((m for m in mounts if m.startswith(f"{self.home}/")), reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
        shutil.rmtree(self.home, ignore_errors=True)
