"""Pure rules for one field of an uploaded record each: types, lengths, alphabets and ranges
that conda, mamba and rattler all accept (see records_check.py for why). No I/O."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from .routing import SUBDIR_RE


class BadField(Exception):
    """Raised by one rule; `check_record` adds the field's name."""


# Bounds: far above anything conda-forge publishes, far below what hurts a client.
BUILD_NUMBER_MAX = 2**31 - 1  # conda: int; libmamba: size_t; rattler: u64
MAX_SPECS = 1024  # entries of depends / constrains / each run_exports list
MAX_SPEC_LENGTH = 1000
MAX_TEXT = 4096  # license and other free text
MAX_LIST = 256  # features, flags, purls
MAX_UNKNOWN_KEYS = 64
MAX_UNKNOWN_BYTES = 16 * 1024  # all unknown fields together, JSON-encoded
MAX_DEPTH = 4  # nesting of an unknown field's value
SAFE_INT = 2**53  # integers beyond this lose precision in JavaScript and double-based readers

# conda reads a timestamp above 253402300799 (9999-12-31 in seconds) as milliseconds and below
# it as seconds (TimestampField in conda/models/records.py); rattler does the same and refuses
# dates past 9999-12-30. Accepted: a date from 1970 to 3000, in either unit.
_SECONDS_MAX = 32_503_680_000  # 3000-01-01T00:00:00Z
_MS_MIN = 253_402_300_800
_MS_MAX = 32_503_680_000_000

_NAME = re.compile(r"^[a-z0-9_][a-z0-9_.-]*$", re.IGNORECASE)  # rattler's PackageName
_VERSION = re.compile(r"^[A-Za-z0-9_.+!]+$")  # conda's VersionOrder alphabet; never `-`
_BUILD = re.compile(r"^[A-Za-z0-9_.+]+$")
_TOKEN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")  # features, flags, platform, arch
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_HEX = re.compile(r"^[0-9a-fA-F]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RUN_EXPORTS = ("weak", "strong", "noarch", "weak_constrains", "strong_constrains")
_NOARCH = ("python", "generic", True, False, None)  # plus conda's legacy booleans
# Keys a client reads as the package's location or identity (conda aliases `build_string`,
# `schannel`, `filename`, `extra-depends`): an upload must not redirect or rename itself.
FORBIDDEN_FIELDS = frozenset(
    {"url", "fn", "filename", "channel", "schannel", "build_string", "extra-depends", "auth"}
)
# Set by an indexer over the file; the proxy computes its own.
COMPUTED = frozenset({"md5", "sha256", "size"})


def check_utf8(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadField("holds text that is not valid UTF-8 (a lone surrogate)") from None


def _text(value: Any, max_length: int = MAX_TEXT, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str):
        raise BadField(f"must be a string, not {kind_of(value)}")
    if not value:
        raise BadField("must not be empty")
    if len(value) > max_length:
        raise BadField(f"is longer than {max_length} characters")
    check_utf8(value)
    if _CONTROL.search(value):
        raise BadField("contains control characters")
    if pattern is not None and not pattern.match(value):
        raise BadField(f"{shown(value)} has characters outside {pattern.pattern}")
    return value


def _optional_text(value: Any) -> None:
    if value is not None:
        _text(value)


def _identity(pattern: re.Pattern[str] | None, max_length: int) -> Callable[[Any], None]:
    """name / version / build: path characters get the message the path checks always gave."""

    def check(value: Any) -> None:
        if isinstance(value, str) and (any(c in value for c in "/\\\x00") or value in {".", ".."}):
            raise BadField(f"{shown(value)} contains a path")
        _text(value, max_length, pattern)

    return check


_version_text = _identity(_VERSION, 128)
_subdir_text = _identity(None, 64)


def _version(value: Any) -> None:
    import rattler  # here: a server that never takes an upload never loads it (3.7 MiB each)

    _version_text(value)
    try:
        rattler.Version(value)
    except Exception as exc:  # rattler's parse error: the client would refuse it the same way
        raise BadField(f"{shown(value)} is not a version: {first_line(exc)}") from None


def _subdir(value: Any) -> None:
    _subdir_text(value)
    if not SUBDIR_RE.match(value):
        raise BadField(f"{shown(value)} is not a conda subdir")


def _integer(low: int, high: int) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadField(f"must be an integer, not {kind_of(value)}")
        if not low <= value <= high:
            raise BadField(f"{shown(value)} is out of range ({low}..{high})")

    return check


def _optional_integer(low: int, high: int) -> Callable[[Any], None]:
    check = _integer(low, high)
    return lambda value: None if value is None else check(value)


def _timestamp(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadField(f"must be an integer (milliseconds since 1970), not {kind_of(value)}")
    if not (0 <= value <= _SECONDS_MAX or _MS_MIN <= value <= _MS_MAX):
        raise BadField(f"{shown(value)} is not a date between 1970 and 3000 in ms or seconds")


def _match_spec(value: Any) -> None:
    import rattler

    _text(value, MAX_SPEC_LENGTH)
    if not value.isascii():
        raise BadField(f"{shown(value)} is not ASCII")
    try:
        # Lenient, as clients parse the depends of repodata; names must be exact, not globs.
        rattler.MatchSpec(value)
    except Exception as exc:
        raise BadField(f"{shown(value)} is not a match spec: {first_line(exc)}") from None


def _list_of(item: Callable[[Any], Any], max_items: int) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not isinstance(value, list):
            raise BadField(f"must be a list, not {kind_of(value)}")
        if len(value) > max_items:
            raise BadField(f"has more than {max_items} entries")
        for i, entry in enumerate(value):
            try:
                item(entry)
            except BadField as exc:
                raise BadField(f"entry {i}: {exc}") from None

    return check


_specs = _list_of(_match_spec, MAX_SPECS)
_tokens = _list_of(lambda v: _text(v, 128, _TOKEN), MAX_LIST)


def _features(value: Any) -> None:
    """A space- or comma-separated string, or (track_features only) a list of strings."""
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise BadField(f"is longer than {MAX_TEXT} characters")
        for token in re.split(r"[ ,]+", value.strip()):
            if token:
                _text(token, 128, _TOKEN)
        return
    _tokens(value)


def _features_string(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise BadField(f"must be a string, not {kind_of(value)}")  # rattler refuses a list here
    _features(value)


def _noarch(value: Any) -> None:
    if not any(value is v or (isinstance(v, str) and value == v) for v in _NOARCH):
        raise BadField(f'{shown(value)} must be "python", "generic", true, false or null')


def _optional_token(value: Any) -> None:
    if value is not None:
        _text(value, 32, _TOKEN)


def _date(value: Any) -> None:
    _text(value, 64)


def _hex_digest(length: int) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value is None:
            return
        _text(value, length)
        if len(value) != length or not _HEX.match(value):
            raise BadField(f"must be {length} hex digits")

    return check


def _site_packages(value: Any) -> None:
    """CEP-17: a path relative to the environment's prefix, inside it."""
    if value is None:
        return
    _text(value, 1024)
    parts = value.replace("\\", "/").split("/")
    if value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value) or ".." in parts:
        raise BadField(f"{shown(value)} is not a relative path inside the environment")


def _run_exports(value: Any) -> None:
    if not isinstance(value, dict):
        raise BadField(f"must be an object, not {kind_of(value)}")
    for key, specs in value.items():
        if key not in _RUN_EXPORTS:
            raise BadField(f"has key {shown(key)}; allowed: {', '.join(_RUN_EXPORTS)}")
        try:
            _specs(specs)
        except BadField as exc:
            raise BadField(f"{key}: {exc}") from None


def _extra_depends(value: Any) -> None:
    if not isinstance(value, dict):
        raise BadField(f"must be an object, not {kind_of(value)}")
    if len(value) > MAX_LIST:
        raise BadField(f"has more than {MAX_LIST} entries")
    for key, specs in value.items():
        try:
            _text(key, 128, _TOKEN)
            _specs(specs)
        except BadField as exc:
            raise BadField(f"{shown(key)}: {exc}") from None


def _purls(value: Any) -> None:
    if value is not None:
        _list_of(lambda v: _text(v, 1024, re.compile(r"^pkg:\S+$")), MAX_LIST)(value)


FIELD_RULES: Mapping[str, Callable[[Any], None]] = {
    "name": _identity(_NAME, 128),
    "version": _version,
    "build": _identity(_BUILD, 128),
    "build_number": _integer(0, BUILD_NUMBER_MAX),
    "subdir": _subdir,
    "depends": _specs,
    "constrains": _specs,
    "run_exports": _run_exports,
    "extra_depends": _extra_depends,
    "track_features": _features,
    "features": _features_string,
    "flags": _tokens,
    "noarch": _noarch,
    "license": _optional_text,
    "license_family": _optional_text,
    "platform": _optional_token,
    "arch": _optional_token,
    "timestamp": _timestamp,
    "python_site_packages_path": _site_packages,
    "legacy_bz2_md5": _hex_digest(32),
    "legacy_bz2_size": _optional_integer(0, SAFE_INT),
    "purls": _purls,
    "preferred_env": _optional_text,
    "date": _date,
    "package_type": _optional_token,
    "md5": _hex_digest(32),
    "sha256": _hex_digest(64),
    "size": _optional_integer(0, SAFE_INT),
}


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN/Infinity"
    return {int: "an integer", float: "a number", str: "a string", list: "a list"}.get(
        type(value), "an object"
    )


def shown(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an integer past Python's 4300-digit conversion limit
        return "a huge integer"
    return text if len(text) <= 60 else text[:57] + "..."


def first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
