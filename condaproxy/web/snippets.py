"""Client settings to copy and paste: conda and mamba (`.condarc`), pixi (a manifest's
`channels`, and the global `[mirrors]`), for one channel or for all the viewer may read.

Pure text from the proxy's external URL (rules/forwarded.external_base) and channel names
(checked at start-up). A private channel's URL carries a `/t/<YOUR-TOKEN>/` placeholder,
never a token. A pixi mirror is offered only for an upstream whose URL holds no credentials,
since the mirror's key is that URL as users write it in their manifests.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

TOKEN_PLACEHOLDER = "<YOUR-TOKEN>"
# Anaconda's defaults: conda reads these from `default_channels`, not by channel name.
DEFAULT_CHANNELS = ("main", "r", "msys2")


@dataclass(frozen=True)
class ChannelRef:
    name: str
    private: bool
    upstream: str | None  # shown form: no credentials (None when there is none to show)


def channel_url(base: str, ref: ChannelRef) -> str:
    prefix = f"{base}/t/{TOKEN_PLACEHOLDER}" if ref.private else base
    return f"{prefix}/{ref.name}"


def _alias(base: str, refs: list[ChannelRef]) -> str:
    return f"{base}/t/{TOKEN_PLACEHOLDER}" if any(r.private for r in refs) else base


def condarc(base: str, refs: list[ChannelRef]) -> str:
    """`~/.condarc` for conda and mamba: channel names resolve through the proxy."""
    alias = _alias(base, refs)
    defaults = [r for r in refs if r.name in DEFAULT_CHANNELS]
    others = [r for r in refs if r.name not in DEFAULT_CHANNELS]
    lines = ["# ~/.condarc (conda and mamba)", f"channel_alias: {alias}"]
    if others:
        lines += ["channels:", *(f"  - {r.name}" for r in others)]
    if defaults:
        lines += ["default_channels:", *(f"  - {channel_url(base, r)}" for r in defaults)]
    if others:
        lines += ["# or, leaving channel_alias as it is, only these channels:", "custom_channels:"]
        lines += [f"  {r.name}: {channel_url(base, r).removesuffix('/' + r.name)}" for r in others]
    return "\n".join(lines) + "\n"


def mamba(base: str, refs: list[ChannelRef]) -> str:
    flags = " ".join(f"-c {channel_url(base, r)}" for r in refs[:3])
    return (
        "# mamba reads ~/.condarc too; or name the channels on the command line:\n"
        f"mamba install {flags} <package>\n"
    )


def pixi_manifest(base: str, refs: list[ChannelRef]) -> str:
    urls = ", ".join(f'"{channel_url(base, r)}"' for r in refs)
    lines = ["# pixi.toml", "[workspace]", f"channels = [{urls}]"]
    if any(r.private for r in refs):
        host = urlsplit(base).netloc
        plain = ", ".join(f'"{base}/{r.name}"' for r in refs)
        lines = [
            "# private channels: log in once instead of a token in the URL",
            f"#   pixi auth login {host} --token {TOKEN_PLACEHOLDER}",
            *lines,
            f"# then: channels = [{plain}]",
        ]
    return "\n".join(lines) + "\n"


def pixi_mirrors(base: str, refs: list[ChannelRef]) -> str | None:
    """`~/.pixi/config.toml` mirrors, for channels whose upstream can be named."""
    mirrored = [r for r in refs if r.upstream is not None]
    if not mirrored:
        return None
    lines = ["# ~/.pixi/config.toml: manifests keep their URLs, pixi fetches through the proxy"]
    lines.append("[mirrors]")
    lines += [f'"{r.upstream}" = ["{channel_url(base, r)}"]' for r in mirrored]
    return "\n".join(lines) + "\n"


def snippets(base: str, refs: list[ChannelRef]) -> dict[str, str]:
    """Every snippet for `refs`, by name (the JSON form of a page carries them too)."""
    out = {
        "condarc": condarc(base, refs),
        "mamba": mamba(base, refs),
        "pixi_manifest": pixi_manifest(base, refs),
    }
    mirrors = pixi_mirrors(base, refs)
    if mirrors is not None:
        out["pixi_mirrors"] = mirrors
    return out
