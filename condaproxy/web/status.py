"""`GET /`: what the proxy holds and whether it is healthy, for the channels the viewer may read.

Nothing here asks an upstream: reachability is read from what the proxy saw (when the
upstream last confirmed a channel's metadata, and its errors and stale serves in the last
hour, from the sampled series), so a page view costs no upstream request. The costly reads
(every index entry) come from the overview, taken at most every 30 s (ops/overview.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from .. import __version__
from ..ops.metrics import policy_held
from ..ops.overview import Overview
from ..ops.series import Point, current_counts, deltas, read_series, window_totals
from ..rules.policy import Policy
from ..rules.redact import Redactor
from ..rules.routing import readable_channels
from ..settings import ChannelSettings, Settings
from .chart import chart
from .html import Html, el
from .page_context import (
    PageRequest,
    PageResponse,
    answer,
    layout,
    percent,
    plural,
    size,
    snippet_section,
    when,
)
from .services import Services
from .snippets import ChannelRef

RUNNING = ("resolving", "fetching")
SHOWN_JOBS = 10


def shown_upstream(channel: ChannelSettings, redact: Redactor) -> str | None:
    """The upstream URL without credentials: no userinfo, no query, a path token masked."""
    if channel.upstream is None:
        return None
    parts = urlsplit(channel.upstream)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return redact(urlunsplit((parts.scheme, netloc, parts.path, "", "")))


def mirror_key(channel: ChannelSettings, redact: Redactor) -> str | None:
    """The upstream URL as users name it in manifests, if it holds nothing secret."""
    shown = shown_upstream(channel, redact)
    return channel.upstream if shown is not None and shown == channel.upstream else None


def channel_ref(channel: ChannelSettings, redact: Redactor) -> ChannelRef:
    return ChannelRef(channel.name, channel.private, mirror_key(channel, redact))


def upstream_state(channel: ChannelSettings, fetched_at: float | None, points: list[Point]) -> str:
    """`local`, `not contacted yet`, `failing` (errors or stale serves since the upstream last
    confirmed anything) or `ok`."""
    if channel.upstream is None:
        return "local"
    bad = [p.since for p in points if p.errors or p.stale]
    if bad and (fetched_at is None or fetched_at <= max(bad)):
        return "failing"
    return "ok" if fetched_at is not None else "not contacted yet"


def _policy(rules: Policy, channel: str, held: dict[str, int]) -> dict[str, Any] | None:
    """The supply-chain policy over `channel` (issue 13), None if nothing can hide a record:
    the age that applies and how many records its latest views hold, by rule kind."""
    if not rules.active(channel):
        return None
    age = rules.channels.get(channel, rules.cooldown)
    return {
        "cooldown": None if age.off else age.text,
        "deny_rules": len(rules.deny),
        "allow_rules": len(rules.allow),
        "held": held,
    }


def status_data(
    req: PageRequest, settings: Settings, services: Services, overview: Overview, redact: Redactor
) -> dict[str, Any]:
    visible = readable_channels(settings.channels, req.who)
    counts = current_counts(services.metrics)
    series = read_series(services.index)
    live = [*series, {"t": req.now, "c": counts}]
    held, rules = policy_held(services.metrics), settings.policy_rules()
    channels = []
    for name in visible:
        channel = settings.channels[name]
        state = overview.channels.get(name)
        fetched = state.fetched_at if state else None
        points = deltas(live, [name], req.now)
        hour = window_totals(points)
        cache, upstream, sent, errors, stale = counts.get(name, [0.0] * 5)
        usage = overview.usage.get(name, {"files": 0, "bytes": 0})
        channels.append(
            {
                "name": name,
                "upstream": shown_upstream(channel, redact),
                "private": channel.private,
                "mirror_only": channel.mirror_only,
                "files": usage["files"],
                "bytes": usage["bytes"],
                "served_from_cache": int(cache),
                "fetched_upstream": int(upstream),
                "hit_ratio": cache / (cache + upstream) if cache + upstream else None,
                "bytes_served": int(sent),
                "upstream_errors": int(errors),
                "stale_serves": int(stale),
                "upstream_errors_last_hour": int(hour["errors"]),
                "stale_serves_last_hour": int(hour["stale"]),
                "last_revalidated": fetched,
                "last_changed": state.changed_at if state else None,
                "upstream_state": upstream_state(channel, fetched, points),
                "subdirs": sorted(state.subdirs) if state else [],
                "recent_uploads": overview.uploads.get(name, []),
                "policy": _policy(rules, name, held.get(name, {})),
            }
        )
    jobs = [j for j in services.prefetcher.jobs() if j.get("channel") in visible]
    jobs.sort(key=lambda j: (j.get("state") not in RUNNING, -float(j.get("created_at") or 0)))
    max_size = settings.cache.max_size
    return {
        "version": __version__,
        "external_url": req.base,
        "store": {
            "bytes": overview.stored_bytes,
            "max_size": max_size or None,
            "used": overview.stored_bytes / max_size if max_size else None,
            "free_disk": shutil.disk_usage(settings.cache.path).free,
            "min_free": settings.cache.min_free,
            "caching": services.evictor.has_room(0),
            "as_of": overview.taken_at,
        },
        "channels": channels,
        "prefetch": jobs[:SHOWN_JOBS],
        "series": [
            {"t": p.t, "cache": p.cache, "upstream": p.upstream, "bytes": p.bytes}
            for p in deltas(series, visible, req.now)
        ],
        "snippets_for": visible,
    }


def status_page(
    req: PageRequest, settings: Settings, services: Services, overview: Overview, redact: Redactor
) -> PageResponse:
    data = status_data(req, settings, services, overview, redact)
    refs = [channel_ref(settings.channels[c["name"]], redact) for c in data["channels"]]
    body = [
        el("h1", "Status"),
        _store(data["store"]),
        _channels(data["channels"], req.now),
        chart(data["series"]),
        _uploads(data["channels"], req.now),
        _jobs(data["prefetch"], req.now),
        snippet_section(req.base, refs) if refs else None,
        el(
            "p",
            "The admin and upload API: ",
            el("a", "/openapi.json", href=f"{req.base}/openapi.json"),
            " (OpenAPI 3.1), and ",
            el("a", "/metrics", href=f"{req.base}/metrics"),
            ".",
            class_="muted",
        ),
    ]
    if not req.who:
        body.insert(1, _signin_hint(req, settings.channels))
    return answer(req, data, layout(req, "Status", [], *body))


def _signin_hint(req: PageRequest, channels: Mapping[str, ChannelSettings]) -> Html | None:
    if not any(c.private for c in channels.values()):
        return None
    return el(
        "p",
        "Private channels are shown to a read token: ",
        el("a", "sign in", href="?signin=1"),
        " (the token as the password), or browse under /t/<token>/.",
        class_="muted",
    )


def _store(store: dict[str, Any]) -> Html:
    limit = store["max_size"]
    held = size(store["bytes"]) + (
        f" of {size(limit)} ({percent(store['bytes'], limit)})" if limit else " (no limit)"
    )
    caching = (
        el("span", "caching", class_="ok")
        if store["caching"]
        else el("span", "not caching: free disk below min_free", class_="bad")
    )
    rows = [
        ("Cache", held),
        (
            "Free disk",
            f"{size(store['free_disk'])} (caching stops below {size(store['min_free'])})",
        ),
        ("State", caching),
    ]
    return el(
        "section",
        el("h2", "Cache"),
        el("table", [el("tr", el("th", k), el("td", v)) for k, v in rows], class_="store"),
        id="store",
    )


def _state(c: dict[str, Any]) -> Html:
    state = c["upstream_state"]
    if state == "failing":
        errors, stale = c["upstream_errors_last_hour"], c["stale_serves_last_hour"]
        detail = f"{errors} errors, {stale} stale serves in the last hour"
        return el(
            "span", el("span", "failing", class_="bad"), " ", el("span", detail, class_="muted")
        )
    if state == "ok":
        return el("span", "ok", class_="ok")
    return el("span", state, class_="muted")


def _policy_text(policy: dict[str, Any]) -> str:
    parts = [f"cooldown {policy['cooldown']}"] if policy["cooldown"] else []
    parts += [f"{n} {kind} rules" for kind in ("deny", "allow") if (n := policy[f"{kind}_rules"])]
    held = sum(policy["held"].values())
    return "policy: " + ", ".join([*parts, f"{held} held"])


def _channels(channels: list[dict[str, Any]], now: float) -> Html:
    head = el(
        "tr",
        el("th", "Channel"),
        el("th", "Upstream"),
        el("th", "Upstream state"),
        el("th", "Last revalidated"),
        el("th", "Cached", class_="num"),
        el("th", "Hit ratio", class_="num"),
    )
    rows = []
    for c in channels:
        tags = [
            el("span", t, class_="tag")
            for t in ("private", "mirror only")
            if c[t.replace(" ", "_")]
        ]
        if c["policy"] is not None:
            tags.append(el("span", _policy_text(c["policy"]), class_="tag"))
        rows.append(
            el(
                "tr",
                el("td", el("a", c["name"], href=quote(c["name"]) + "/"), " ", tags),
                el(
                    "td",
                    el("code", c["upstream"])
                    if c["upstream"]
                    else el("span", "local only", class_="muted"),
                ),
                el("td", _state(c)),
                el("td", when(c["last_revalidated"], now)),
                el("td", f"{plural(c['files'], 'file')}, {size(c['bytes'])}", class_="num"),
                el(
                    "td",
                    f"{100 * c['hit_ratio']:.0f} %" if c["hit_ratio"] is not None else "-",
                    el("br"),
                    el(
                        "span",
                        f"{c['served_from_cache']} / {c['fetched_upstream']}",
                        class_="muted",
                    ),
                    class_="num",
                ),
            )
        )
    if not rows:
        rows = [el("tr", el("td", "No channel to show.", colspan="6"))]
    return el(
        "section",
        el("h2", "Channels"),
        el("table", el("thead", head), el("tbody", rows), class_="channels"),
        el(
            "p",
            "Hit ratio: requests served from the cache / fetched upstream, since the start.",
            class_="muted",
        ),
        id="channels",
    )


def _uploads(channels: list[dict[str, Any]], now: float) -> Html | None:
    rows = [
        el(
            "tr",
            el("td", c["name"]),
            el("td", u["name"]),
            el("td", u["version"]),
            el("td", u["subdir"]),
            el("td", when(u["uploaded_at"], now)),
            el("td", u["uploaded_by"]),
        )
        for c in channels
        for u in c["recent_uploads"]
    ]
    if not rows:
        return None
    head = el(
        "tr", *(el("th", h) for h in ("Channel", "Package", "Version", "Subdir", "Uploaded", "By"))
    )
    return el(
        "section",
        el("h2", "Recent uploads"),
        el("table", el("thead", head), el("tbody", rows), class_="uploads"),
        id="uploads",
    )


def _jobs(jobs: list[dict[str, Any]], now: float) -> Html | None:
    if not jobs:
        return None
    rows = []
    for j in jobs:
        total, fetched = int(j.get("total") or 0), int(j.get("fetched") or 0)
        progress = f"{fetched} of {total}" if total else "-"
        if j.get("already_cached"):
            progress += f" ({j['already_cached']} already cached)"
        failures = len(j.get("failures") or [])
        rows.append(
            el(
                "tr",
                el("td", f"{j.get('channel')}/{j.get('subdir')}"),
                el("td", j.get("state", "")),
                el(
                    "td",
                    progress,
                    el("progress", value=str(fetched), max=str(total)) if total else None,
                ),
                el("td", str(failures) if failures else "-", class_="num"),
                el("td", when(j.get("created_at"), now)),
            )
        )
    head = el(
        "tr", *(el("th", h) for h in ("Prefetch", "State", "Progress", "Failures", "Started"))
    )
    return el(
        "section",
        el("h2", "Prefetch jobs"),
        el("table", el("thead", head), el("tbody", rows), class_="jobs"),
        id="prefetch",
    )
