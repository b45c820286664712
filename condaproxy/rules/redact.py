"""Masking of credentials in anything that may reach a log line, an error body, a page or the
output of a command: the one rule every rendering of a URL, a path or an exception text goes
through (Redactor for the proxy's known secrets and these patterns; `mask_urls` for the
patterns alone, where no settings exist yet: a configuration that failed to load).

What a URL may carry that is a credential, whoever wrote it (the configuration, an upstream's
redirect, a client):
- its userinfo, whole: `user:password@`, and a lone `token@` (a token as the user name, as
  GitHub-style and many registries take it; upstream.py sends it as basic auth);
- an anaconda.org style path token, the segment after a `t` segment;
- its query and fragment (`?token=`, a presigned URL's `X-Amz-Signature=`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

# An anaconda.org style path token: the segment after a `t` segment, up to the next `/`, space
# or quote, wherever the path stops (`/t/<token>` alone, `'t/<token>'` quoted without its
# leading slash, a path cut short): paths.py never echoes it, and no message may either.
_TOKEN_PATH = re.compile(r"(?<![^/\s'\"])t/[^/\s'\"]+")
# The userinfo of a URL's authority, up to its last `@` (a password may hold an unencoded
# one: `https://me:p@ss@host`, which urlsplit and httpx read as user `me`, password `p@ss`).
_USERINFO = re.compile(r"//[^/?#\s]*@")
# The query and fragment of a URL (scheme://...): nothing the proxy configures or builds has
# one, so one shown is someone else's, and may be a signature or a token.
_QUERY = re.compile(r"(\w://[^\s'\"?#]*)[?#][^\s'\"]*")
_MASK = "***"


def mask_urls(text: str) -> str:
    """`text` with every credential a URL or path in it may carry masked (the patterns above),
    whether or not the value is known."""
    if "t/" in text:
        text = _TOKEN_PATH.sub(f"t/{_MASK}", text)
    if "@" in text:
        text = _USERINFO.sub(f"//{_MASK}@", text)
    if "://" in text and ("?" in text or "#" in text):
        text = _QUERY.sub(rf"\1?{_MASK}", text)
    return text


def masked_path(raw: str, path: str) -> str:
    """The decoded request path `path` for a log line, every segment that follows a `t`
    segment masked whole. Read from the path as sent (`raw`), since decoding turns a token's
    `%2F`, `%20` or `%27` into a separator, a space or a quote, which would end the masking
    within the token and leave its rest in the log."""
    if "/t/" not in raw and "%" not in raw:
        return path  # no `t` segment with anything after it, however spelt
    segments = raw.split("/")
    after_t = [i > 0 and unquote(segments[i - 1]) == "t" for i in range(len(segments))]
    if not any(after_t):
        return path
    shown = (_MASK if hide else unquote(s) for s, hide in zip(segments, after_t, strict=True))
    return "/".join(shown)


def upstream_identity(upstream: str | None) -> str | None:
    """What names an upstream in records the cache keeps (which upstream filled it): its URL
    with the credentials masked, so none is written to disk and rotating one changes nothing."""
    return mask_urls(upstream) if upstream else upstream


def kept_url(url: str, base: str) -> str:
    """`url` as the cache keeps it on disk: below the channel's base URL (which may hold a
    path token or a user name and password), that base in its masked form, so the index holds
    no credential. `used_url` puts the base of the day back: a rotated credential finds the
    same entry, and an entry kept for another upstream (another masked base) stays another's.
    A URL elsewhere is kept as it is (an origin the upstream's metadata names)."""
    shown = mask_urls(base)
    return shown + url[len(base) :] if shown != base and url.startswith(base) else url


def used_url(kept: str, base: str) -> str:
    """The URL to fetch for what `kept_url` kept (a URL kept raw before: itself)."""
    shown = mask_urls(base)
    return base + kept[len(shown) :] if shown != base and kept.startswith(shown) else kept


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, _MASK)
        return mask_urls(text)
