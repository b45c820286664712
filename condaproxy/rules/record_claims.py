"""Pure rules: what an uploaded package may claim about itself and its dependencies. No I/O.

records_check makes sure every client can *read* a record; these make sure it claims nothing a
client would act on beyond the package itself. A private channel's records are merged over a
public one, so a field here steers every client of the channel:

- `name` is lower-case. conda's naming conventions allow lower-case letters, digits, `_`, `-`
  and `.`; rattler lower-cases a name before comparing it and other tools do not, so `NumPy`
  uploaded beside `numpy` is one package to one client and another to the next. It does not
  start with `__`: those are virtual packages, the client system's to report.
- `subdir` is a platform conda or rattler knows (a misspelt or invented one is never solved for,
  `Linux-64` and `linux-64` are two folders on one disk and one on another), and a package
  marked `noarch` lives in `noarch`; `platform`, when given, is the subdir's; `package_type`,
  when given, only restates `noarch` (conda treats `virtual_*` types as not its to manage).
- every dependency (`depends`, `constrains`, each `run_exports` and `extra_depends` list) is a
  plain `name [version [build]]` spec, brackets holding only version, build and build_number.
  A channel (`conda-forge::numpy`, `https://x/y::numpy`, `[channel=...]`) tells every solver of
  the merged repodata to fetch the dependency from elsewhere: dependency confusion written into
  metadata. A subdir, URL, file name, checksum or namespace pins where or which file a client
  fetches; text that parsers drop or read differently (`#` comments, `;`, a fourth word) would
  make two clients install two different things.

Applied to new uploads only (archive.check_index): a record already stored is held to
check_record alone, so an upgrade never makes an existing channel's manifest unreadable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .record_fields import BadField, shown

# rattler_conda_types::Platform (a superset of conda's KNOWN_SUBDIRS).
KNOWN_SUBDIRS = frozenset(
    {
        "noarch",
        "linux-32",
        "linux-64",
        "linux-aarch64",
        "linux-armv6l",
        "linux-armv7l",
        "linux-loongarch64",
        "linux-ppc64le",
        "linux-ppc64",
        "linux-ppc",
        "linux-s390x",
        "linux-riscv32",
        "linux-riscv64",
        "freebsd-32",
        "freebsd-64",
        "freebsd-arm64",
        "freebsd-ppc64le",
        "freebsd-ppc64",
        "osx-64",
        "osx-arm64",
        "ios-arm64",
        "iossimulator-arm64",
        "iossimulator-64",
        "android-aarch64",
        "android-armv7a",
        "android-64",
        "android-32",
        "win-32",
        "win-64",
        "win-arm64",
        "emscripten-wasm32",
        "emscripten-wasm64",
        "wasi-wasm32",
        "zos-z",
    }
)
MAX_NAME = 128
NAME_RE = re.compile(r"^[a-z0-9_][a-z0-9_.-]*\Z")
# After the name: versions (`>=1.2,<2|3.*`, `!=1.0`, `~=1.1`, parentheses) and build globs.
_SPEC_REST = re.compile(r"^[A-Za-z0-9_.+!*,|<>=~() ]*\Z")
_BUILD_GLOB = re.compile(r"^[A-Za-z0-9_.+*]+\Z")
_BRACKET = re.compile(r"^(?P<head>[^\[\]]*)\[(?P<body>[^\[\]]*)\]\Z")
_PAIR = re.compile(
    r"""\s*(?P<key>[A-Za-z0-9_-]*)\s*=\s*(?:'(?P<q1>[^']*)'|"(?P<q2>[^"]*)"|(?P<bare>[^,'"]*?))"""
    r"""\s*(?:,|\Z)"""
)
_EQUALS_BUILD = re.compile(r"^==?[^=<>!~,|]+=[^=]")  # name=1.0=h0, name==1.0=h0
_PACKAGE_TYPES = {"python": "noarch_python", "generic": "noarch_generic", True: "noarch_generic"}
BRACKET_KEYS = ("version", "build", "build_number")
_PIN_KEYS = ("channel", "subdir", "url", "fn", "md5", "sha256", "namespace")


def check_name(value: str) -> None:
    if len(value) > MAX_NAME:
        raise BadField(f"is longer than {MAX_NAME} characters")
    if NAME_RE.match(value):
        return
    if NAME_RE.match(value.lower()):
        raise BadField(
            f"{shown(value)} is not lower-case: conda package names are (rattler compares "
            f"them lower-cased, other tools do not; upload it as {value.lower()!r})"
        )
    raise BadField(
        f"{shown(value)} is not a conda package name (lower-case letters, digits, '_', '-' "
        "and '.', starting with a letter, digit or '_')"
    )


def check_package_name(value: str) -> None:
    """The record's own name: a dependency may name `__glibc`, a package may not be one."""
    check_name(value)
    if value.startswith("__"):
        raise BadField(
            f"{shown(value)} starts with '__', which names a virtual package (__glibc, __cuda, "
            "__osx...): solvers take those from the client's system, not from a channel"
        )


def check_subdir(value: str) -> None:
    if value not in KNOWN_SUBDIRS:
        raise BadField(
            f"{shown(value)} is not a platform conda or rattler knows (noarch, linux-64, "
            "linux-aarch64, osx-64, osx-arm64, win-64 and the others of rattler's Platform)"
        )


def check_spec(value: str) -> None:
    """A dependency as a solver reads it from repodata: `name [version [build]]`, or
    `name<op>version`, `name=version=build`, with brackets holding version, build and
    build_number only. Raises BadField naming what the spec does beyond that."""
    if "::" in value:
        where = shown(value.split("::", 1)[0].strip())
        raise BadField(
            f"{shown(value)} names a channel ({where}::): a dependency is resolved in the "
            "channels the client chose, never one the package names (dependency confusion)"
        )
    head, pairs = _brackets(value)
    name, rest = _split_name(head.strip())
    if not name:
        raise BadField(f"{shown(value)} does not start with a package name")
    if ":" in name or "/" in name:
        raise BadField(
            f"{shown(value)} names a channel, subdir or namespace ({shown(name)}); a dependency is "
            "a plain 'name [version [build]]' spec"
        )
    try:
        check_name(name)
    except BadField as exc:
        raise BadField(f"{shown(value)}: package name {exc}") from None
    if not _SPEC_REST.match(rest):
        bad = next(c for c in rest if not _SPEC_REST.match(c))
        raise BadField(
            f"{shown(value)} holds {bad!r} after the package name; a dependency is a plain "
            "'name [version [build]]' spec"
        )
    words = _words(rest)
    if len(words) > 2:
        raise BadField(
            f"{shown(value)} has more than a name, a version and a build (clients disagree "
            "on what the rest means)"
        )
    if len(words) == 2 and not _BUILD_GLOB.match(words[1]):
        raise BadField(f"{shown(value)}: build {shown(words[1])} is not a build string or glob")
    given = {"version"} if words else set()
    if len(words) == 2 or (words and _EQUALS_BUILD.match(words[0])):
        given.add("build")
    for key, text in pairs:
        if key in given:
            raise BadField(f"{shown(value)} gives its {key} twice (in the spec and in [...])")
        given.add(key)
        if key == "build" and not _BUILD_GLOB.match(text):
            raise BadField(f"{shown(value)}: build {shown(text)} is not a build string or glob")
        if key == "version" and not _SPEC_REST.match(text):
            raise BadField(f"{shown(value)}: version {shown(text)} is not a version spec")
        if key == "build_number" and not re.match(r"^(?:[<>]=?|==|!=)?[0-9]{1,10}\Z", text):
            raise BadField(f"{shown(value)}: build_number {shown(text)} is not a number or bound")


def _brackets(value: str) -> tuple[str, list[tuple[str, str]]]:
    if "[" not in value and "]" not in value:
        return value, []
    found = _BRACKET.match(value)
    if found is None:
        raise BadField(f"{shown(value)} has unbalanced or nested [...]")
    pairs: list[tuple[str, str]] = []
    body, pos = found["body"], 0
    while pos < len(body):
        pair = _PAIR.match(body, pos)
        if pair is None or pair.end() == pos:
            raise BadField(f"{shown(value)}: [...] holds something other than key=value pairs")
        key = pair["key"].lower()
        text = next(v for v in (pair["q1"], pair["q2"], pair["bare"]) if v is not None).strip()
        if key in _PIN_KEYS:
            raise BadField(
                f"{shown(value)} sets [{key}=...]: a dependency must not say where or which "
                f"file a client fetches; brackets may hold {', '.join(BRACKET_KEYS)}"
            )
        if key not in BRACKET_KEYS:
            raise BadField(
                f"{shown(value)} sets [{key}=...]; brackets may hold {', '.join(BRACKET_KEYS)}"
            )
        if not text:
            raise BadField(f"{shown(value)} sets [{key}=] to nothing")
        pairs.append((key, text))
        pos = pair.end()
    if not pairs:
        raise BadField(f"{shown(value)} has empty [...]")
    return found["head"], pairs


def _split_name(head: str) -> tuple[str, str]:
    """The name runs to the first space or version operator."""
    cut = next((i for i, c in enumerate(head) if c in " =<>!~"), len(head))
    return head[:cut], head[cut:]


def _words(rest: str) -> list[str]:
    """Version and build as separate words; spaces after an operator or around `,` and `|`
    join the version (`>= 1.0, <2` is one version)."""
    joined = re.sub(r"\s*([,|])\s*", r"\1", rest.strip())
    joined = re.sub(r"([<>=!~]=?|==)\s+", r"\1", joined)
    if joined.startswith(("=", "<", ">", "!", "~")) and " " not in joined:
        return [joined] if joined else []
    return joined.split()


def _spec_list(item: Any, where: str) -> None:
    if not isinstance(item, list):
        return  # check_record has refused it already
    for i, spec in enumerate(item):
        if isinstance(spec, str):
            try:
                check_spec(spec.strip())
            except BadField as exc:
                raise BadField(f"{where}entry {i}: {exc}") from None


def _specs(value: Any) -> None:
    _spec_list(value, "")


def _spec_lists(value: Any) -> None:
    if isinstance(value, dict):
        for key, specs in value.items():
            _spec_list(specs, f"{key}: ")


CLAIM_RULES: Mapping[str, Callable[[Any], None]] = {
    "name": lambda v: check_package_name(v) if isinstance(v, str) else None,
    "subdir": lambda v: check_subdir(v) if isinstance(v, str) else None,
    "depends": _specs,
    "constrains": _specs,
    "run_exports": _spec_lists,
    "extra_depends": _spec_lists,
}


def check_consistency(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """(field, problem) when fields that each passed contradict each other."""
    subdir, noarch = record.get("subdir"), record.get("noarch")
    if noarch in ("python", "generic", True) and subdir != "noarch":
        kind = noarch if isinstance(noarch, str) else "true"
        return "subdir", (
            f"is {shown(subdir)} but the package is noarch: {kind}; a noarch package lives in "
            "the noarch subdir (clients would install it as a platform package there)"
        )
    package_type = record.get("package_type")
    if package_type is not None and package_type != _PACKAGE_TYPES.get(noarch):
        return "package_type", (
            f"is {shown(package_type)}; it may only restate noarch (noarch_python, "
            "noarch_generic): conda reads virtual_* types as packages it must not link or unlink"
        )
    platform = record.get("platform")
    if not isinstance(platform, str) or not isinstance(subdir, str) or subdir == "noarch":
        return None
    if platform != subdir.split("-", 1)[0]:
        return "platform", f"is {shown(platform)}, not the platform of subdir {subdir!r}"
    return None
