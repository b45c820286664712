"""Pure rules: the conda MatchSpec subset a supply-chain policy needs. No I/O.

No maintained pure-Python MatchSpec parser is on PyPI (conda's own needs all of conda;
py-rattler's is native and belongs to the client side), so this is a small, strict matcher:

    name                       numpy, lib*            (glob, case-insensitive)
    name version               numpy 1.26.*, numpy >=1.2,<2|3.*   (versions.py)
    name version build         numpy 1.26.0 *_1       (build: glob, case-sensitive)
    name=version[=build]       numpy=1.26, numpy==1.26.0=py311_0
    name<op>version            numpy>=1.26
    name[key=value, ...]       version, build, build_number, sha256, md5, subdir, fn

`sha256`/`md5` compare hex case-insensitively. Anything else (channel::, parentheses, unknown
bracket keys, a bad glob or version) is a ValueError, so a policy is never half-understood.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .versions import version_matcher

_NAME = re.compile(r"^[A-Za-z0-9_*][A-Za-z0-9_.+*-]*$")
_BUILD = re.compile(r"^[A-Za-z0-9_.+*]+$")
_BRACKET = re.compile(r"^(?P<head>[^\[]*)\[(?P<body>[^\]]*)\]$")
_PAIR = re.compile(r"""^\s*(?P<key>[a-z0-9_]+)\s*=\s*(?P<q>['"]?)(?P<value>[^'"]*)(?P=q)\s*$""")
_HEX = {"sha256": 64, "md5": 32}
KEYS = ("version", "build", "build_number", "sha256", "md5", "subdir", "fn")

Record = Mapping[str, Any]


@dataclass(frozen=True)
class MatchSpec:
    text: str
    tests: tuple[Callable[[Record], bool], ...] = field(default=(), compare=False)
    checksums: frozenset[str] = frozenset()  # the checksum keys it tests (sha256, md5)
    loose: tuple[Callable[[Record], bool], ...] = field(default=(), compare=False)

    def matches(self, record: Record) -> bool:
        return all(test(record) for test in self.tests)

    def may_match(self, record: Record) -> bool:
        """Whether it matches as far as can be told without the file's checksums."""
        return all(test(record) for test in self.loose)


def _field(name: str, record: Record) -> str:
    value = record.get(name)
    return "" if value is None else str(value)


def _name_test(name: str) -> Callable[[Record], bool]:
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a package name or name glob")
    lowered = name.lower()
    if "*" in lowered:
        return lambda r: fnmatch.fnmatchcase(_field("name", r).lower(), lowered)
    return lambda r: _field("name", r).lower() == lowered


def _version_test(spec: str) -> Callable[[Record], bool]:
    test = version_matcher(spec)
    return lambda r: test(_field("version", r))


def _build_test(glob: str) -> Callable[[Record], bool]:
    if not _BUILD.match(glob):
        raise ValueError(f"build {glob!r} is not a build string or glob")
    return lambda r: fnmatch.fnmatchcase(_field("build", r), glob)


def _key_test(key: str, value: str) -> Callable[[Record], bool]:
    if key == "version":
        return _version_test(value)
    if key == "build":
        return _build_test(value)
    if key == "build_number":
        if not value.isdigit():
            raise ValueError(f"build_number {value!r} is not a whole number")
        return lambda r: _field("build_number", r) == str(int(value))
    if key in _HEX:
        if len(value) != _HEX[key] or not re.fullmatch(r"[0-9a-fA-F]+", value):
            raise ValueError(f"{key} {value!r} is not {_HEX[key]} hex digits")
        want = value.lower()
        return lambda r: _field(key, r).lower() == want
    if key in ("subdir", "fn"):
        return lambda r: _field(key, r) == value
    raise ValueError(f"unknown key {key!r} in [...] (known: {', '.join(KEYS)})")


def _head(text: str) -> list[Callable[[Record], bool]]:
    """`name`, `name version [build]`, `name=version[=build]`, `name<op>version`."""
    if "::" in text:
        raise ValueError("channel:: in a policy spec is not supported (the policy is per proxy)")
    words = text.split()
    if len(words) == 1:
        word = words[0]
        cut = next((i for i, c in enumerate(word) if c in "=<>!~"), len(word))
        name, rest = word[:cut], word[cut:]
        words = [name]
        if rest:
            if rest.startswith("=") and not rest.startswith("=="):
                version, _, build = rest[1:].partition("=")
                words += [f"={version}" if "*" not in version else version]
                words += [build] if build else []
            elif rest.startswith("==") and rest.count("=") > 2:
                version, _, build = rest[2:].partition("=")
                words += [f"=={version}", build]
            else:
                words.append(rest)
    if not words or len(words) > 3:
        raise ValueError("expected 'name', 'name version' or 'name version build'")
    tests = [_name_test(words[0])]
    if len(words) > 1:
        tests.append(_version_test(words[1]))
    if len(words) > 2:
        tests.append(_build_test(words[2]))
    return tests


def parse_matchspec(text: object) -> MatchSpec:
    """A MatchSpec from text; ValueError says what is wrong with it."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{text!r} is not a MatchSpec")
    source = text.strip()
    head, tests, checksum_tests = source, [], []
    keys = set()
    if "[" in source:
        bracket = _BRACKET.match(source)
        if bracket is None:
            raise ValueError(f"{source!r}: unbalanced [...]")
        head = bracket["head"].strip()
        for pair in filter(str.strip, bracket["body"].split(",")):
            found = _PAIR.match(pair)
            if found is None:
                raise ValueError(f"{source!r}: {pair.strip()!r} is not key=value")
            test = _key_test(found["key"], found["value"].strip())
            if found["key"] in _HEX:
                keys.add(found["key"])
                checksum_tests.append(test)
            else:
                tests.append(test)
    try:
        loose = (*_head(head), *tests)
        return MatchSpec(source, (*loose, *checksum_tests), frozenset(keys), loose)
    except ValueError as exc:
        raise ValueError(f"{source!r} is not a MatchSpec this proxy takes: {exc}") from None
