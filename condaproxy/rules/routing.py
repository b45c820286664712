"""Pure rules: which channel, label, subdir and resource a request path names. No I/O.

Segments arrive decoded and checked (paths.py); here each must also match its grammar, so that
`ResourcePath.relative`, the path sent upstream, is built from nothing but validated names.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .auth import Token, has_role
from .errors import NotFound
from .paths import TOKEN_SEGMENT, check_segment, check_token, split_raw_path, split_token

# Every pattern ends in \Z, not $: `$` also matches before a trailing newline.
# conda subdirs: noarch, or <platform>-<arch> (linux-64, osx-arm64, emscripten-wasm32, zos-z ...).
SUBDIR_RE = re.compile(r"^(noarch|[a-z][a-z0-9]*-[a-z0-9_]+)\Z")
# <name>-<version>-<build>.<ext>: the name may hold dashes, version and build may not. Versions
# use letters, digits, `.`, `_`, `+` (local part) and `!` (epoch); builds no `!`.
_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.+-]*"
PACKAGE_NAME_RE = re.compile(rf"^{_NAME}\Z")
PACKAGE_RE = re.compile(
    rf"^(?P<name>{_NAME})-(?P<version>[A-Za-z0-9_.+!]+)"
    r"-(?P<build>[A-Za-z0-9_.+]+)\.(?P<ext>conda|tar\.bz2)\Z"
)
SHARD_RE = re.compile(r"^[0-9a-f]{64}\.msgpack\.zst\Z")
# anaconda.org labels (`<channel>/label/<label>/...`): main, dev, rc, gcc7, cf202003 ...
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*\Z")
LABEL_SEGMENT = "label"
REPODATA_VARIANTS = {
    "repodata.json": "json",
    "repodata.json.zst": "zst",
    "repodata.json.bz2": "bz2",
    "current_repodata.json": "current",
    "current_repodata.json.zst": "current_zst",
}
SHARD_INDEX = "repodata_shards.msgpack.zst"
# The subdirs nearly every channel has: the browse pages list them, start-up warms them.
COMMON_SUBDIRS = ("noarch", "linux-64", "linux-aarch64", "osx-64", "osx-arm64", "win-64")
# Other metadata a client may ask for: passed through, revalidated like repodata.
SUBDIR_METADATA = {"run_exports.json", "run_exports.json.zst", "patch_instructions.json"}
CHANNEL_METADATA = {"channeldata.json", "notices.json", "tos.json"}


class UnknownChannel(NotFound):
    """404 for a path that names no configured channel. The body lists `channels`, which must
    be only those the caller may read (`unknown_channel`); `token` is the path token, if any."""

    def __init__(
        self, message: str, channels: Sequence[str] = (), token: str | None = None
    ) -> None:
        super().__init__(message, channels=list(channels))
        self.token = token


class Kind(enum.Enum):
    REPODATA = "repodata"
    SHARD_INDEX = "shard_index"
    SHARD = "shard"
    PACKAGE = "package"
    METADATA = "metadata"


@dataclass(frozen=True)
class ResourcePath:
    """A parsed request: `channel` is a configured name; `prefix` is e.g. `label/dev`."""

    channel: str
    prefix: str
    subdir: str | None
    filename: str
    kind: Kind
    token: str | None = None

    @property
    def relative(self) -> str:
        """The path below the channel's upstream URL."""
        parts = [self.prefix, self.subdir or "", "shards" if self.kind is Kind.SHARD else ""]
        return "/".join(p for p in [*parts, self.filename] if p)

    @property
    def subdir_key(self) -> str:
        """Identifies one (channel, label, subdir): the unit a repodata snapshot covers."""
        return "/".join(p for p in (self.channel, self.prefix, self.subdir or "") if p)

    @property
    def key(self) -> str:
        return f"{self.channel}/{self.relative}"


def parse_path(path: str, channels: Collection[str]) -> ResourcePath:
    """Map an already-decoded path (an index key, `channel/subdir/file`) to a resource: each
    segment gets the same check as a request's (paths.py), then the channel grammar."""
    return parse_segments([check_segment(s) for s in path.lstrip("/").split("/")], channels)


def parse_raw_path(raw: bytes, channels: Collection[str]) -> ResourcePath:
    """Map a request's raw (percent-encoded) path to a resource (paths.split_raw_path)."""
    return parse_segments(split_raw_path(raw), channels)


def parse_segments(segments: Sequence[str], channels: Collection[str]) -> ResourcePath:
    """Map checked, decoded segments to a resource; raise NotFound/BadRequest with a reason.

    Invariant: every part of the result (and so `relative`, the upstream path) is a segment
    that matched its grammar here: a configured channel, `label/<label>`, a subdir, a shard
    name, a package file name or a known metadata file name. Nothing else reaches upstream."""
    token, rest = split_token(segments)
    channel = channel_of(rest, channels)  # the whole path may be a channel: named below
    if channel is None:
        raise UnknownChannel(f"unknown channel in path '/{'/'.join(rest)}'", token=token)
    tail = rest[len(channel.split("/")) :]
    # The token may also follow the channel name (`/<channel>/t/<token>/...`).
    if token is None and len(tail) >= 3 and tail[0] == TOKEN_SEGMENT:
        token, tail = check_token(tail[1]), tail[2:]
    shown = "/".join([channel, *tail])
    if not tail:
        raise NotFound(
            f"'/{shown}' names a channel, not a file: its page is '/{shown}/', and clients ask"
            " for <subdir>/repodata.json below it"
        )
    return _classify(channel, tail, token, shown)


def channel_prefix(path: str, channels: Collection[str]) -> str | None:
    """The configured channel that `path` (`<channel>[/...]`, no leading slash) starts with."""
    return channel_of(path.split("/"), channels)


def channel_of(segments: Sequence[str], channels: Collection[str]) -> str | None:
    """The configured channel that `segments` start with (all of them may be the channel)."""
    return _match_channel([*segments, ""], channels)


def _match_channel(segments: Sequence[str], channels: Collection[str]) -> str | None:
    # Channel names may contain slashes: the longest configured name that prefixes the path wins.
    for n in range(len(segments) - 1, 0, -1):
        candidate = "/".join(segments[:n])
        if candidate in channels:
            return candidate
    return None


class Visibility(Protocol):
    @property
    def private(self) -> bool: ...


def readable_channels(channels: Mapping[str, Visibility], who: Token | None) -> list[str]:
    """The channels a caller may know of: the public ones, and private ones it may read."""
    return sorted(n for n, c in channels.items() if not c.private or has_role(who, n, "read"))


def unknown_channel(
    message: str, channels: Mapping[str, Visibility], who: Token | None
) -> UnknownChannel:
    """The one unknown-channel 404: it lists only what `who` may read, so an anonymous caller
    never learns a private channel's name."""
    return UnknownChannel(message, readable_channels(channels, who))


def _classify(channel: str, tail: list[str], token: str | None, shown: str) -> ResourcePath:
    filename = tail[-1]
    if len(tail) >= 3 and tail[-2] == "shards" and SUBDIR_RE.match(tail[-3]):
        if not SHARD_RE.match(filename):
            raise NotFound(f"'{filename}' is not a shard name (<sha256>.msgpack.zst)")
        prefix = _label_prefix(tail[:-3], shown)
        return ResourcePath(channel, prefix, tail[-3], filename, Kind.SHARD, token)
    if len(tail) >= 2 and SUBDIR_RE.match(tail[-2]):
        kind = _subdir_kind(filename)
        if kind is None:
            raise NotFound(f"'/{shown}' is not a file a conda channel serves")
        prefix = _label_prefix(tail[:-2], shown)
        return ResourcePath(channel, prefix, tail[-2], filename, kind, token)
    if filename in CHANNEL_METADATA:
        prefix = _label_prefix(tail[:-1], shown)
        return ResourcePath(channel, prefix, None, filename, Kind.METADATA, token)
    raise NotFound(f"'/{shown}' is not a file a conda channel serves")


def _label_prefix(parts: list[str], shown: str) -> str:
    """What may sit between the channel and the subdir: nothing, or `label/<label>`."""
    if not parts:
        return ""
    if len(parts) == 2 and parts[0] == LABEL_SEGMENT and LABEL_RE.match(parts[1]):
        return f"{LABEL_SEGMENT}/{parts[1]}"
    raise NotFound(
        f"'/{shown}' is not a file a conda channel serves: between the channel and the subdir"
        " only label/<label> may appear"
    )


def shadowed_route(outer: str, inner: str) -> str | None:
    """What of channel `outer`'s own paths a channel named `inner` would take over (the longest
    configured name wins routing): `label/<x>`, a subdir, or a channel file right below
    `outer`. None when `inner` does not lie under `outer` or lies beside its routes."""
    if not inner.startswith(outer + "/"):
        return None
    first = inner[len(outer) + 1 :].split("/")[0]
    if first == LABEL_SEGMENT:
        return f"its labels ('{outer}/label/...')"
    if SUBDIR_RE.match(first):
        return f"its subdir '{first}'"
    if first in CHANNEL_METADATA or first == "shards":
        return f"its '{first}'"
    return None


def serves_below_subdir(filename: str) -> bool:
    """A file name a channel serves inside a subdir (or its `shards/` folder)."""
    return _subdir_kind(filename) is not None or SHARD_RE.match(filename) is not None


def _subdir_kind(filename: str) -> Kind | None:
    if filename in REPODATA_VARIANTS:
        return Kind.REPODATA
    if filename == SHARD_INDEX:
        return Kind.SHARD_INDEX
    if filename in SUBDIR_METADATA:
        return Kind.METADATA
    if PACKAGE_RE.match(filename):
        return Kind.PACKAGE
    return None
