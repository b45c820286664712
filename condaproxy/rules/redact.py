"""Masking of credentials in anything that may reach a log line or an error body."""

from __future__ import annotations

import re
from collections.abc import Iterable

# An anaconda.org style path token: the segment after a `t` segment, up to the next `/`, space
# or quote, wherever the path stops (`/t/<token>` alone, `'t/<token>'` quoted without its
# leading slash, a path cut short): paths.py never echoes it, and no message may either.
_TOKEN_PATH = re.compile(r"(?<![^/\s'\"])t/[^/\s'\"]+")
_USERINFO = re.compile(r"(//[^/@\s:]+):[^/@\s]+@")
_MASK = "***"


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, _MASK)
        if "t/" in text:
            text = _TOKEN_PATH.sub(f"t/{_MASK}", text)
        if "@" in text:
            text = _USERINFO.sub(rf"\1:{_MASK}@", text)
        return text
