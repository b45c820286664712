"""Pure rules: which channel, subdir and resource a request path names. No I/O."""

from __future__ import annotations

import enum
import re
from collections.abc import Collection
from dataclasses import dataclass

from .errors import BadRequest, NotFound

# conda subdirs: noarch, or <platform>-<arch> (linux-64, osx-arm64, emscripten-wasm32, zos-z ...).
SUBDIR_RE = re.compile(r"^(noarch|[a-z][a-z0-9]*-[a-z0-9_]+)$")
# <name>-<version>-<build>.<ext>: the name may hold dashes, version and build may not.
PACKAGE_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9_][A-Za-z0-9_.+-]*)-(?P<version>[^-/]+)-(?P<build>[^-/]+)"
    r"\.(?P<ext>conda|tar\.bz2)$"
)
SHARD_RE = re.compile(r"^[0-9a-f]{64}\.msgpack\.zst$")
REPODATA_VARIANTS = {
    "repodata.json": "json",
    "repodata.json.zst": "zst",
    "repodata.json.bz2": "bz2",
    "current_repodata.json": "current",
}
SHARD_INDEX = "repodata_shards.msgpack.zst"
# Other metadata a client may ask for: passed through, revalidated like repodata.
SUBDIR_METADATA = {"run_exports.json", "run_exports.json.zst", "patch_instructions.json"}
CHANNEL_METADATA = {"channeldata.json", "notices.json", "tos.json"}


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


def split_token(path: str) -> tuple[str, str | None]:
    """Strip an anaconda.org style `/t/<token>/` segment: rattler puts it first, conda after
    the channel alias (which here is the proxy root), so both land at the start."""
    parts = path.lstrip("/").split("/")
    if len(parts) >= 3 and parts[0] == "t" and parts[1]:
        return "/".join(parts[2:]), parts[1]
    return "/".join(parts), None


def parse_path(path: str, channels: Collection[str]) -> ResourcePath:
    """Map a URL path to a resource; raise NotFound/BadRequest with a reason otherwise."""
    rest, token = split_token(path)
    segments = rest.split("/")
    if any(s in {"", ".", ".."} or "\\" in s or "\x00" in s for s in segments):
        raise BadRequest(f"malformed path '/{rest}'")
    channel = _match_channel(segments, channels)
    if channel is None:
        raise NotFound(f"unknown channel in path '/{rest}'", channels=sorted(channels))
    tail = segments[len(channel.split("/")) :]
    # The token may also follow the channel name (`/<channel>/t/<token>/...`).
    if token is None and len(tail) >= 3 and tail[0] == "t":
        token, tail = tail[1], tail[2:]
    if not tail:
        raise NotFound(f"'/{rest}' names a channel, not a file; ask for <subdir>/repodata.json")
    return _classify(channel, tail, token, rest)


def channel_prefix(path: str, channels: Collection[str]) -> str | None:
    """The configured channel that `path` (`<channel>[/...]`, no leading slash) starts with."""
    segments = path.split("/")
    return _match_channel([*segments, ""], channels)


def _match_channel(segments: list[str], channels: Collection[str]) -> str | None:
    # Channel names may contain slashes: the longest configured name that prefixes the path wins.
    for n in range(len(segments) - 1, 0, -1):
        candidate = "/".join(segments[:n])
        if candidate in channels:
            return candidate
    return None


def _classify(channel: str, tail: list[str], token: str | None, rest: str) -> ResourcePath:
    filename = tail[-1]
    if len(tail) >= 3 and tail[-2] == "shards" and SUBDIR_RE.match(tail[-3]):
        if not SHARD_RE.match(filename):
            raise NotFound(f"'{filename}' is not a shard name (<sha256>.msgpack.zst)")
        return ResourcePath(channel, "/".join(tail[:-3]), tail[-3], filename, Kind.SHARD, token)
    if len(tail) >= 2 and SUBDIR_RE.match(tail[-2]):
        prefix, subdir = "/".join(tail[:-2]), tail[-2]
        kind = _subdir_kind(filename)
        if kind is None:
            raise NotFound(f"'/{rest}' is not a file a conda channel serves")
        return ResourcePath(channel, prefix, subdir, filename, kind, token)
    if filename in CHANNEL_METADATA:
        return ResourcePath(channel, "/".join(tail[:-1]), None, filename, Kind.METADATA, token)
    raise NotFound(f"'/{rest}' is not a file a conda channel serves")


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
