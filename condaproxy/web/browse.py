"""`GET /<channel>/` and `GET /<channel>/<subdir>/`: a channel browsed like a static one.

The channel page lists its subdirs; a subdir page lists package names, 200 a page, filtered
by a name prefix (`?q=`); a package page (`?name=numpy`) lists its files with size, sha256,
and whether each is cached or uploaded, linked to download through the proxy.

The data comes from catalog.py (a subdir's shard index or repodata, as clients see it); a
page takes at most PER_PAGE rows of it, and echoes the query only escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..ops.listing import Listing
from ..ops.overview import Overview
from ..rules.errors import BadRequest, NotFound
from ..rules.redact import Redactor
from ..rules.routing import COMMON_SUBDIRS, PACKAGE_NAME_RE
from ..settings import ChannelSettings, Settings
from .catalog import Catalog
from .html import Html, el
from .page_context import (
    PageRequest,
    PageResponse,
    answer,
    int_param,
    layout,
    size,
    snippet_section,
    when,
)
from .services import Services
from .snippets import snippets
from .status import channel_ref, shown_upstream

PER_PAGE = 200
MAX_PAGE = 100_000
MAX_QUERY_TEXT = 100


@dataclass(frozen=True)
class Paged:
    page: int
    pages: int
    start: int
    end: int


def paged(total: int, page: int) -> Paged:
    pages = max(1, -(-total // PER_PAGE))
    start = min((page - 1) * PER_PAGE, total)
    return Paged(page, pages, start, min(start + PER_PAGE, total))


class Browser:
    def __init__(self, settings: Settings, redact: Redactor) -> None:
        self.settings, self.redact = settings, redact
        self.catalog = Catalog(settings)

    # pages

    def channel_page(
        self, req: PageRequest, services: Services, channel: ChannelSettings, overview: Overview
    ) -> PageResponse:
        state = overview.channels.get(channel.name)
        known = {s: v for s, v in (state.subdirs.items() if state else ()) if "/" not in s}
        uploaded = set(services.uploads.subdirs(channel.name))
        names = set(known) | uploaded | (set(COMMON_SUBDIRS) if channel.upstream else {"noarch"})
        subdirs: list[dict[str, Any]] = []
        for subdir in sorted(names, key=lambda s: (s != "noarch", s)):
            seen = known.get(subdir)
            subdirs.append(
                {
                    "subdir": subdir,
                    "fetched": seen is not None,
                    "last_revalidated": seen.fetched_at if seen else None,
                    "last_changed": seen.changed_at if seen else None,
                    "shards": bool(seen and seen.shards),
                    "uploads": len(services.uploads.current(channel.name, subdir)),
                }
            )
        ref = channel_ref(channel, self.redact)
        data = {
            "channel": channel.name,
            "upstream": shown_upstream(channel, self.redact),
            "private": channel.private,
            "mirror_only": channel.mirror_only,
            "subdirs": subdirs,
            "snippets": snippets(req.base, [ref]),
        }
        rows = [
            el(
                "tr",
                el("td", el("a", s["subdir"], href=s["subdir"] + "/")),
                el(
                    "td",
                    when(s["last_revalidated"], req.now)
                    if s["fetched"]
                    else el("span", "not fetched yet", class_="muted"),
                ),
                el("td", "shards" if s["shards"] else ("repodata" if s["fetched"] else "-")),
                el("td", str(s["uploads"]) if s["uploads"] else "-", class_="num"),
            )
            for s in subdirs
        ]
        head = el("tr", *(el("th", h) for h in ("Subdir", "Last revalidated", "Index", "Uploads")))
        upstream = data["upstream"]
        body = [
            el("h1", channel.name),
            el("p", "Upstream: ", el("code", upstream) if upstream else "none (uploads only)"),
            el("table", el("thead", head), el("tbody", rows), class_="subdirs"),
            snippet_section(req.base, [ref]),
        ]
        return answer(req, data, layout(req, channel.name, [(channel.name, "")], *body))

    async def subdir_page(
        self, req: PageRequest, services: Services, channel: ChannelSettings, subdir: str
    ) -> PageResponse:
        listing = await self.catalog.listing(services, channel, subdir)
        name = req.query.get("name")
        if name is not None:
            return await self.package_page(req, services, channel, subdir, listing, name)
        q = req.query.get("q", "").strip()
        if len(q) > MAX_QUERY_TEXT:
            raise BadRequest(f"query parameter 'q' is longer than {MAX_QUERY_TEXT} characters")
        first, last = listing.starting_with(q)
        if first == last and q != q.lower():  # conda names are lower case: `?q=NumP` finds numpy
            first, last = listing.starting_with(q.lower())
        page = paged(last - first, int_param(req.query, "page", 1, MAX_PAGE))
        picked = range(first + page.start, first + page.end)
        packages: list[dict[str, Any]] = [
            {"name": listing.names[i], "files": listing.counts[i] if listing.counts else None}
            for i in picked
        ]
        ref = channel_ref(channel, self.redact)
        data = {
            "channel": channel.name,
            "subdir": subdir,
            "source": listing.source,
            "q": q,
            "page": page.page,
            "pages": page.pages,
            "per_page": PER_PAGE,
            "total": last - first,
            "packages": packages,
            "snippets": snippets(req.base, [ref]),
        }
        head = el(
            "tr", el("th", "Package"), el("th", "Files", class_="num") if listing.counts else None
        )
        rows = [
            el(
                "tr",
                el("td", el("a", p["name"], href="?name=" + quote(p["name"]))),
                el("td", str(p["files"]), class_="num") if listing.counts else None,
            )
            for p in packages
        ]
        found = f"{last - first} packages" + (f" starting with “{q}”" if q else "")
        body = [
            el("h1", f"{channel.name} / {subdir}"),
            _filter(q),
            el("p", found, f", page {page.page} of {page.pages}", class_="muted count"),
            el("table", el("thead", head), el("tbody", rows), class_="packages"),
            _pager(page, {"q": q} if q else {}),
            snippet_section(req.base, [ref]),
        ]
        crumbs = [(channel.name, "../"), (subdir, "")]
        return answer(req, data, layout(req, f"{channel.name}/{subdir}", crumbs, *body))

    async def package_page(
        self,
        req: PageRequest,
        services: Services,
        channel: ChannelSettings,
        subdir: str,
        listing: Listing,
        name: str,
    ) -> PageResponse:
        if not PACKAGE_NAME_RE.match(name):
            raise BadRequest("query parameter 'name' is not a conda package name")
        first, _ = listing.starting_with(name)
        if name not in listing.names[first : first + 1] and name != name.lower():
            name = name.lower()  # names compare as conda compares them: `?name=NumPy` is numpy
            first, _ = listing.starting_with(name)
        if name not in listing.names[first : first + 1]:
            raise NotFound(f"no package '{name}' in {channel.name}/{subdir}")
        rows, truncated = await self.catalog.package_files(services, channel, subdir, listing, name)
        ref = channel_ref(channel, self.redact)
        page = paged(len(rows), int_param(req.query, "page", 1, MAX_PAGE))
        uploads = services.uploads.current(channel.name, subdir)
        files = []
        for row in rows[page.start : page.end]:
            key = f"{channel.name}/{subdir}/{row.filename}"
            uploaded = row.filename in uploads
            files.append(
                {
                    **row.public(),
                    "uploaded": uploaded,
                    "cached": uploaded or services.index.get_file(key) is not None,
                    "url": f"{req.base}/{channel.name}/{subdir}/{row.filename}",
                }
            )
        data = {
            "channel": channel.name,
            "subdir": subdir,
            "name": name,
            "page": page.page,
            "pages": page.pages,
            "total": len(rows),
            "truncated": truncated,
            "files": files,
            "snippets": snippets(req.base, [ref]),
        }
        body = [
            el("h1", f"{name}"),
            el(
                "p",
                f"{len(rows)} files in {channel.name}/{subdir}",
                f", page {page.page} of {page.pages}",
                class_="muted count",
            ),
            el("p", "The scan stopped at its bound: more files may exist.", class_="bad")
            if truncated
            else None,
            _files_table(files, req.now),
            _pager(page, {"name": name}),
            snippet_section(req.base, [ref]),
        ]
        crumbs = [(channel.name, "../"), (subdir, "./"), (name, "")]
        return answer(req, data, layout(req, f"{name} in {channel.name}/{subdir}", crumbs, *body))


def _files_table(files: list[dict[str, Any]], now: float) -> Html:
    head = el("tr", *(el("th", h) for h in ("File", "Version", "Build", "Size", "sha256", "State")))
    rows = []
    for f in files:
        state = "uploaded" if f["uploaded"] else ("cached" if f["cached"] else "upstream")
        rows.append(
            el(
                "tr",
                el("td", el("a", f["filename"], href=quote(f["filename"]), class_="download")),
                el("td", f["version"]),
                el("td", f["build"]),
                el("td", size(f["size"]), class_="num"),
                el("td", f["sha256"] or "-", class_="mono sha"),
                el("td", el("span", state, class_=f"tag state-{state}")),
            )
        )
    return el("table", el("thead", head), el("tbody", rows), class_="files")


def _filter(q: str) -> Html:
    return el(
        "form",
        el(
            "label",
            "Name starts with ",
            el("input", type="search", name="q", id="q", value=q),
            for_="q",
        ),
        el("button", "Filter", type="submit"),
        method="get",
        action="./",
        class_="filter",
    )


def _pager(page: Paged, keep: dict[str, str]) -> Html | None:
    if page.pages <= 1:
        return None
    extra = "".join(f"&{k}={quote(v)}" for k, v in keep.items())
    links = []
    if page.page > 1:
        links.append(el("a", "← previous", href=f"?page={page.page - 1}{extra}", rel="prev"))
    links.append(el("span", f"page {page.page} of {page.pages}"))
    if page.page < page.pages:
        links.append(el("a", "next →", href=f"?page={page.page + 1}{extra}", rel="next"))
    return el("nav", links, class_="pages")
