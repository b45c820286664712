"""Rules about credentials across a configuration, checked at load: one way to authenticate
to each upstream, fully given, and one token per token value. Pure: sections are read by
attribute (settings.py defines them)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from .config_text import ConfigError
from .routing import shadowed_route


def check_upstream_auth(channel: Any, key: str, where: str) -> None:
    """One way to authenticate to an upstream, fully given: a credential that would be
    silently dropped (a password without a user name; basic auth beside a bearer token,
    which wins) stops start-up instead."""
    in_url = channel.upstream is not None and "@" in urlsplit(channel.upstream).netloc
    basic = channel.upstream_username is not None or channel.upstream_password is not None
    if channel.upstream_password is not None and channel.upstream_username is None:
        raise ConfigError(f"{where}: '{key}.upstream_password' needs '{key}.upstream_username'")
    if channel.upstream_bearer is not None and (basic or in_url):
        raise ConfigError(
            f"{where}: '{key}.upstream_bearer' and basic auth (upstream_username/password or "
            "a user in the upstream URL) exclude each other: keep one"
        )
    if basic and in_url:
        raise ConfigError(
            f"{where}: '{key}' has a user both in its upstream URL and in upstream_username: "
            "keep one"
        )


def check_distinct_tokens(tokens: Mapping[str, Any], where: str, peer_name: str) -> None:
    """A token value names one token: with two, a request would get the roles of whichever
    is compared last, whatever the file says."""
    seen: dict[str, str] = {}
    for name, token in tokens.items():
        key = "cluster.peer_token" if name == peer_name else f"tokens.{name}.token"
        if token.token.value in seen:
            raise ConfigError(
                f"{where}: '{key}' is the same as '{seen[token.token.value]}' "
                "(each token needs its own value)"
            )
        seen[token.token.value] = key


def check_channel_nesting(names: Collection[str], where: str) -> None:
    """Channel names may hold slashes, and the longest configured name wins a path. So
    `team/label/dev` beside `team` would silently take over team's `dev` label (and
    `team/linux-64` its subdir) for every client: refused, naming both, whichever was meant."""
    for outer in names:
        for inner in names:
            taken = shadowed_route(outer, inner)
            if taken is not None:
                raise ConfigError(
                    f"{where}: 'channels.{inner}' would take over {taken} of "
                    f"'channels.{outer}' (the longer name wins routing): rename one"
                )
