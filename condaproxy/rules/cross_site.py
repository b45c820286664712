"""Pure rule: a browser's cross-site request may not change what the proxy holds. No I/O.

A browser that signed in on the status page (`/?signin=1`, HTTP basic auth) keeps that token
and sends it with every later request to the proxy's origin, including one that another site
makes it send: a form's POST, or `fetch(..., {mode: "no-cors", credentials: "include"})`
with a multipart or text/plain body, neither of which needs a CORS preflight. Without this
rule a page the user merely visits could upload a package, or start a prefetch, in the
signed-in user's name (CSRF).

So an unsafe method (RFC 9110 section 9.2.1) is refused when the browser says the request
comes from another site: `Sec-Fetch-Site` (Fetch Metadata, sent by every current browser)
other than `same-origin` or `none` (the user typed the URL), or, from an older browser, an
`Origin` whose host and port are not the proxy's own (its Host, or its external address).
Clients that are not browsers (curl, quetz-client, rattler) send neither header and pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from .errors import ProxyError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ALLOWED_SITES = frozenset({"same-origin", "none"})


class CrossSiteRequest(ProxyError):
    """403: a browser sent this request on another site's behalf."""

    status = 403


def check_same_site(method: str, headers: Mapping[str, str], base: str) -> None:
    """Raise CrossSiteRequest (403) for a state-changing request another site made."""
    reason = cross_site_refusal(method, headers, base)
    if reason is not None:
        raise CrossSiteRequest(
            f"{method} refused: {reason}. The admin and upload API does not act on a request "
            "another site's page makes a browser send; call it from a client (curl, "
            "quetz-client) with the token in a header"
        )


def cross_site_refusal(method: str, headers: Mapping[str, str], base: str) -> str | None:
    """Why this request must be refused as a cross-site one, or None to let it pass.

    `headers` are the request's (lower-case names); `base` is the proxy's external URL
    (rules/forwarded.external_base), whose host also counts as the proxy's own."""
    if method.upper() in SAFE_METHODS:
        return None
    site = headers.get("sec-fetch-site")
    if site is not None:
        if site.strip().lower() in _ALLOWED_SITES:
            return None
        return "the browser marks it as sent from another site (Sec-Fetch-Site)"
    origin = headers.get("origin")
    if origin is None:
        return None
    own = {headers.get("host", "").strip().lower(), urlsplit(base).netloc.lower()}
    if _origin_host(origin) in own - {""}:
        return None
    return "its Origin is not this proxy"


def _origin_host(origin: str) -> str | None:
    """`host[:port]` of an Origin header; None for `null` or anything that is not an origin."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return parts.netloc.lower()
