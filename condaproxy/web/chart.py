"""The status page's chart: requests per minute (from the cache, from upstream) as stacked
bars and bytes served as a line, over the last hour, as inline SVG (no script, no inline
style: colours come from the stylesheet's classes)."""

from __future__ import annotations

from typing import Any

from ..ops.series import INTERVAL
from .html import Html, el
from .page_context import size


def _bar(x: float, y: float, width: float, height: float, kind: str, label: str) -> Html:
    return el(
        "rect",
        el("title", label),
        x=f"{x:.1f}",
        y=f"{y:.1f}",
        width=f"{width:.1f}",
        height=f"{height:.1f}",
        class_=kind,
    )


def chart(points: list[dict[str, Any]]) -> Html:
    """Requests per minute (from the cache, from upstream) and bytes served, last hour."""
    title = el("h2", "Last hour")
    if len(points) < 2:
        note = "The chart fills in as the proxy samples its counters, once a minute."
        return el("section", title, el("p", note, class_="muted"), id="chart")
    width, height, pad = 600, 160, 30
    span = max(p["t"] for p in points) - min(p["t"] for p in points) or INTERVAL
    t0 = min(p["t"] for p in points)
    top = max(max(p["cache"] + p["upstream"] for p in points), 1.0)
    most = max(max(p["bytes"] for p in points), 1.0)
    bar = max((width - 2 * pad) / max(len(points), 1) - 2, 2)
    shapes = []
    line = []
    for p in points:
        x = pad + (p["t"] - t0) / span * (width - 2 * pad - bar)
        hc = p["cache"] / top * (height - 2 * pad)
        hu = p["upstream"] / top * (height - 2 * pad)
        base = height - pad
        label = f"{int(p['cache'])} from cache, {int(p['upstream'])} upstream, {size(p['bytes'])}"
        shapes.append(_bar(x, base - hc, bar, hc, "cache", label))
        shapes.append(_bar(x, base - hc - hu, bar, hu, "upstream", label))
        line.append(f"{x + bar / 2:.1f},{base - p['bytes'] / most * (height - 2 * pad):.1f}")
    svg = el(
        "svg",
        el("title", "Requests per minute and bytes served, last hour"),
        el(
            "line",
            x1=str(pad),
            y1=str(height - pad),
            x2=str(width - pad),
            y2=str(height - pad),
            class_="axis",
        ),
        shapes,
        el("polyline", points=" ".join(line), class_="bytes"),
        el("text", f"{int(top)} req/min", x="2", y=str(pad - 8)),
        el("text", f"{size(most)}/min", x=str(width - pad - 70), y=str(pad - 8)),
        el("text", f"-{int(span // 60)} min", x=str(pad), y=str(height - 8)),
        el("text", "now", x=str(width - pad - 20), y=str(height - 8)),
        viewBox=f"0 0 {width} {height}",
        role="img",
        class_="chart",
        xmlns="http://www.w3.org/2000/svg",
    )
    legend = el(
        "p",
        el("span", "■ from the cache", class_="cache"),
        " ",
        el("span", "■ from upstream", class_="upstream"),
        " ",
        el("span", "— bytes served", class_="bytes"),
        class_="legend",
    )
    return el("section", title, svg, legend, id="chart")
