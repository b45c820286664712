"""What every page needs: the request as pages see it (who asks, where the proxy is, HTML or
JSON), the answer with its security headers, the layout around a page's content, and the
formatting of sizes and times.

Links between pages are relative (`linux-64/`, `../`), so they keep a `/t/<token>/` prefix and
work under a reverse proxy's path prefix; the snippets use the external URL.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import QueryParams

from .. import __version__
from ..rules.encoding import prefers_json
from ..rules.errors import BadRequest
from ..rules.numbers import decimal
from ..settings import TokenSettings
from .html import Html, document, el
from .snippets import ChannelRef, snippets

Scope = dict[str, Any]

# No script, no inline style, nothing from elsewhere; forms only to ourselves; never framed.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",  # a page's URL may hold a /t/<token>/
    "cache-control": "no-store",
    "vary": "Accept, Authorization, X-API-Key",
}
MAX_QUERY = 1024  # bytes of query string a page reads


@dataclass(frozen=True)
class PageRequest:
    method: str
    headers: Mapping[str, str]
    query: QueryParams
    token: str | None  # the /t/<token>/ of the path, if any
    segments: list[str]  # below any /t/<token>/, without the final slash
    who: TokenSettings | None
    presented: bool  # a token was presented (known or not)
    base: str  # the proxy's external URL
    now: float

    @property
    def wants_json(self) -> bool:
        """`Accept: application/json` (preferred to text/html) or `?format=json`."""
        return prefers_json(self.headers.get("accept")) or self.query.get("format") == "json"

    @property
    def home(self) -> str:
        """The relative link to `/` (or `/t/<token>/`) from this page."""
        return "../" * len(self.segments) or "./"

    @property
    def stylesheet(self) -> str:
        depth = len(self.segments) + (2 if self.token is not None else 0)
        return "../" * depth + "static/condaproxy.css"


def query_of(scope: Scope) -> QueryParams:
    raw = scope.get("query_string", b"")
    if len(raw) > MAX_QUERY:
        raise BadRequest(f"query string is {len(raw)} bytes; pages read at most {MAX_QUERY}")
    return QueryParams(raw.decode("latin-1"))


def int_param(query: QueryParams, name: str, default: int, high: int) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    number = decimal(text)
    if number is None or not 1 <= number <= high:
        raise BadRequest(f"query parameter '{name}' must be a number from 1 to {high}")
    return number


class PageResponse:
    """HTML or JSON with the pages' security headers; HEAD gets the headers alone."""

    def __init__(self, body: bytes, content_type: str, head: bool, status: int = 200) -> None:
        self.body, self.status, self.head = body, status, head
        headers = {**SECURITY_HEADERS, "content-type": content_type}
        headers["content-length"] = str(len(body))
        self.headers = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": b"" if self.head else self.body})


def answer(req: PageRequest, data: dict[str, Any], page: Html) -> PageResponse:
    head = req.method == "HEAD"
    if req.wants_json:
        body = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return PageResponse(body, "application/json", head)
    return PageResponse(page.encode(), "text/html; charset=utf-8", head)


def layout(req: PageRequest, title: str, crumbs: list[tuple[str, str]], *body: Any) -> Html:
    """The page around `body`: the proxy's name and version, where we are, and the way back."""
    trail: list[Any] = [el("a", "condaproxy", href=req.home, class_="brand")]
    for label, href in crumbs:
        trail += [" / ", el("a", label, href=href) if href else el("span", label)]
    header = el("header", el("nav", trail), el("span", f"version {__version__}", class_="muted"))
    footer = el(
        "footer",
        el(
            "p",
            "JSON: the same URL with ",
            el("code", "Accept: application/json"),
            ".",
            class_="muted",
        ),
    )
    return document(f"{title} - condaproxy", req.stylesheet, header, el("main", *body), footer)


def snippet_section(base: str, refs: list[ChannelRef]) -> Html:
    """How to point conda, mamba and pixi at `refs` through this proxy."""
    found = snippets(base, refs)
    titles = {
        "condarc": "conda and mamba: ~/.condarc",
        "mamba": "mamba, on the command line",
        "pixi_manifest": "pixi: the manifest",
        "pixi_mirrors": "pixi: mirrors for every project",
    }
    blocks = [
        el("div", el("h3", titles[name]), el("pre", el("code", text), class_=f"snippet-{name}"))
        for name, text in found.items()
    ]
    return el("section", el("h2", "Use it"), el("div", blocks, class_="snippets"), id="use")


# formatting


def size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop returns


def when(t: float | None, now: float) -> Html:
    """`2026-01-01 12:00 UTC (3 min ago)`; `never` without a time."""
    if t is None:
        return el("span", "never", class_="muted")
    stamp = datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return el("span", stamp, " ", el("span", f"({ago(now - t)})", class_="muted"))


def ago(seconds: float) -> str:
    if seconds < 0:
        return "just now"
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= span:
            return f"{int(seconds // span)} {unit} ago"
    return f"{int(seconds)} s ago"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f} %" if whole else "-"
