"""The proxy.toml sections as msgspec Structs: types, ranges and defaults, checked by
`msgspec.convert` (settings.py reads the file and the environment and applies the checks that
span sections)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from .config_text import Secret

# Byte counts: written `2GiB`, `500MB` or as a number; parsed by values.parse_size.
_BYTES = {"unit": "bytes"}
Size = Annotated[int, msgspec.Meta(ge=0, extra=_BYTES)]
PositiveSize = Annotated[int, msgspec.Meta(ge=1, extra=_BYTES)]
DocumentSize = Annotated[int, msgspec.Meta(ge=1 << 20, extra=_BYTES)]
# Finite and at most a day: TOML and the environment both spell `inf`, which aiohttp cannot
# schedule (every upstream request would fail with an OverflowError).
Seconds = Annotated[float, msgspec.Meta(gt=0, le=86400)]
YEAR = 365 * 86400
Role = Literal["read", "write", "admin"]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class ServerSettings(_Section, frozen=True):
    host: Annotated[str, msgspec.Meta(min_length=1)] = "127.0.0.1"  # "": every interface
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8080
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    # The proxy's address as clients see it (for the status page's snippets); empty: taken from
    # each request (Host, and X-Forwarded-* from a trusted proxy).
    external_url: str = ""
    # Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For/-Proto/-Host are
    # believed: the client address in logs, the external URL shown to users.
    trusted_proxies: tuple[str, ...] = ()
    # Seconds a SIGTERM waits for in-flight responses before it cuts the rest off (a client
    # that stopped reading would otherwise hold the stop forever); with the 5 s more that
    # downloads no client waits for may take, under Kubernetes' default 30 s grace period.
    shutdown_timeout: Seconds = 20.0
    # Seconds a connection gets to send a request's line and header fields (from its opening,
    # the previous response's end or the head's first byte): then it is closed, with a 408.
    header_timeout: Seconds = 30.0
    # Seconds a response may stay blocked on a client that takes no bytes: then it is dropped.
    send_timeout: Seconds = 60.0


class LogSettings(_Section, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"  # auto: JSON unless on a terminal


class CacheSettings(_Section, frozen=True):
    path: Path = Path("./cache")
    # At most a year: a larger one is a typo (and past max-age's 2^31 a client may misread it).
    repodata_ttl: Annotated[int, msgspec.Meta(ge=0, le=YEAR)] = 60
    negative_ttl: Annotated[int, msgspec.Meta(ge=0, le=YEAR)] = 30
    max_size: Size = 0  # bytes of cached blobs; 0 = unbounded
    min_free: Size = 1024**3  # below this much free disk, stop caching (still proxying)
    # Largest decompressed upstream metadata document (repodata.json, shard index) accepted;
    # conda-forge's linux-64 repodata.json is ~300 MB, so this leaves room to spare.
    max_repodata_size: DocumentSize = 768 * 1024**2
    # Pass a changed upstream repodata.json.zst through to the client that asked while it is
    # checked behind it (first byte at once, last byte held until the snapshot is adopted).
    # Off by default: a body the proxy refuses then ends that client's transfer early, where
    # otherwise it would get the previous snapshot or a 502 (cache/following.py).
    refresh_passthrough: bool = False


class UpstreamSettings(_Section, frozen=True):
    connect_timeout: Seconds = 10.0
    read_timeout: Seconds = 60.0


class UploadSettings(_Section, frozen=True):
    max_upload_size: PositiveSize = 2 * 1024**3
    # Decompression budget for checking an archive's members: at most this many bytes in all,
    # and at most `max_unpacked_ratio` times the upload's size once past 256 MiB.
    max_unpacked_size: PositiveSize = 16 * 1024**3
    max_unpacked_ratio: Annotated[int, msgspec.Meta(ge=1)] = 100
    read_timeout: Seconds = 30.0  # seconds without body progress before an upload is cut (408)


class MetricsSettings(_Section, frozen=True):
    token: Secret | None = None  # a bearer token that sees private channel names in /metrics


class PolicySettings(_Section, frozen=True):
    """Supply-chain policy (issue 13, README "Supply-chain policy"): checked strictly at load
    (rules/policy.py); an age is text like "7d", "P7D", an RFC 3339 cutoff, or 0 (off)."""

    cooldown: str | int = 0
    deny: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    exempt: dict[str, str | int] = {}
    # TEST ONLY: a file holding a number of seconds added to the policy's clock (the end-to-end
    # tests move time forward in a running proxy). Never set it in a deployment.
    test_clock_file: str = ""


class TokenSettings(_Section, frozen=True):
    """A proxy-side token: a name (for logs and listings), its value and a role per channel
    (`*` stands for every channel)."""

    name: str
    token: Secret
    roles: dict[str, Role] = {}

    def role_for(self, channel: str) -> str | None:
        return self.roles.get(channel, self.roles.get("*"))


class ChannelSettings(_Section, frozen=True):
    name: str
    upstream: str | None = None  # None: a local-only channel, served entirely from uploads
    upstream_token: Secret | None = None
    upstream_username: str | None = None
    upstream_password: Secret | None = None
    upstream_bearer: Secret | None = None
    private: bool = False  # every path needs a read token
    mirror_only: bool = False  # refuses uploads
    allow_upstream: tuple[str, ...] = ()  # local names that still show upstream records
    # Extra origins (scheme://host[:port]) that metadata may send the proxy to, beyond those
    # whose address is of the same class (public, private, loopback) as the upstream's.
    allowed_origins: tuple[str, ...] = ()
    cooldown: str | int | None = None  # this channel's age, over [policy] cooldown

    def secrets(self) -> list[str]:
        held = (self.upstream_token, self.upstream_password, self.upstream_bearer)
        found = [s.value for s in held if s is not None]
        password = urlsplit(self.upstream).password if self.upstream else None
        return [s for s in [*found, password] if s]


class StorageSettings(_Section, frozen=True):
    """[storage]: an S3-compatible bucket shared by every replica; the local cache is its L1.
    Absent, the proxy is a single node and nothing below is ever touched."""

    url: str  # s3://bucket[/prefix]
    endpoint: str = ""  # an S3-compatible endpoint (MinIO, Ceph RGW, R2...); empty: AWS
    region: str = "us-east-1"
    # Both or neither; neither: the SDK's ambient credentials (IRSA, instance profile...).
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    allow_http: bool = False  # an http:// endpoint sends requests (not keys) in clear
    connect_timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0
    timeout: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0  # to the first byte
    # After a failure the store is taken as down for this long: misses go upstream (kept in
    # L1 only), uploads get a 503, /readyz says so; then it is tried again.
    retry_after: Annotated[float, msgspec.Meta(gt=0, le=600)] = 15.0
    # Bytes of cached blobs (`cas/`) the bucket may hold; 0: unbounded (a lifecycle rule on
    # `cas/` bounds it instead). Checked every `evict_interval` seconds by one replica at a
    # time (with Redis), oldest first; uploads are never evicted.
    max_size: Size = 0
    evict_interval: Annotated[float, msgspec.Meta(ge=0.1, le=86400)] = 300.0

    @property
    def bucket(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def prefix(self) -> str:
        """The key prefix, "" or ending in "/"."""
        path = urlsplit(self.url).path.strip("/")
        return f"{path}/" if path else ""


class ClusterSettings(_Section, frozen=True):
    """[cluster]: how replicas sharing [storage] learn of each other's changes."""

    redis_url: Secret | None = None  # redis:// or rediss://; none: polling only
    poll_interval: Annotated[float, msgspec.Meta(ge=0.1, le=300)] = 2.0  # upload visibility bound
    replica_id: str = ""  # empty: host name and process id
    # With Redis: a download's lease (renewed while it runs), and how long another replica
    # waits for the owner's copy in the bucket before fetching the file itself.
    lease: Annotated[float, msgspec.Meta(ge=1, le=600)] = 6.0
    owner_wait: Annotated[float, msgspec.Meta(ge=0, le=600)] = 30.0
    # With Redis: this replica's address for the others (http://$(POD_IP):8080). A replica
    # waiting on this one's download then streams it from here as it arrives (verifying it),
    # authenticated by `peer_token`, a read token for every channel shared by the replicas.
    peer_url: str = ""
    peer_token: Secret | None = None
    peer_timeout: Annotated[float, msgspec.Meta(gt=0, le=600)] = 5.0  # no byte for this long


SECTIONS: dict[str, type[_Section]] = {
    "server": ServerSettings,
    "cache": CacheSettings,
    "upstream": UpstreamSettings,
    "uploads": UploadSettings,
    "metrics": MetricsSettings,
    "log": LogSettings,
    "policy": PolicySettings,
}
# Sections that exist only when written (or named by a CONDAPROXY_<SECTION>_* variable).
OPTIONAL_SECTIONS: dict[str, type[_Section]] = {
    "storage": StorageSettings,
    "cluster": ClusterSettings,
}
