"""`condaproxy check-config`: the effective settings with secrets masked, and warnings about
values that load but will bite (like `nginx -t`). Pure: settings in, text out."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import msgspec

from ..rules.redact import Redactor
from ..settings import Secret, Settings

# conda reads the token in `/t/<token>/` with this pattern; anything else crashes it.
CONDA_TOKEN = re.compile(r"^[a-zA-Z0-9-]+$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _masked(value: Any) -> Any:
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, Path):
        return str(value)
    raise NotImplementedError(type(value))


def effective(settings: Settings) -> dict[str, Any]:
    """Every setting as loaded (defaults included), secrets as `***`: those of their own keys,
    and those an upstream URL holds (`user:password@`, an anaconda.org `/t/<token>/`)."""
    data: dict[str, Any] = msgspec.to_builtins(settings, enc_hook=_masked)
    redact = Redactor(settings.secrets())
    for channel in data.get("channels", {}).values():
        upstream = channel.get("upstream")
        if upstream:
            channel["upstream"] = redact(upstream)  # its userinfo and path token as `***`
    return data


def warnings(settings: Settings) -> list[str]:
    found = []
    for name, token in settings.tokens.items():
        if not CONDA_TOKEN.match(token.token.value):
            found.append(
                f"tokens.{name}.token holds characters other than letters, digits and '-': "
                "conda cannot carry it in a /t/<token>/ URL (use a header, or make one with "
                "`condaproxy token new`)"
            )
    for name, channel in settings.channels.items():
        if channel.private and not any(t.role_for(name) for t in settings.tokens.values()):
            found.append(f"channels.{name} is private but no token may read it")
    if settings.policy.test_clock_file:
        found.append(
            "policy.test_clock_file is set: the policy's clock is moved by what that file "
            "holds (a test hook; anyone who can write it can end every cooldown)"
        )
    return found


def new_token(length: int = 40) -> str:
    """A token every client can carry: letters and digits only (conda's /t/<token>/ pattern)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))
