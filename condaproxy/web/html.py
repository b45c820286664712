"""HTML built so that it cannot be injected into: escaping is the default, not a step.

`el(tag, *children, **attrs)` escapes every text child and attribute value; only `Html`
values pass through unescaped, and `Html` is made only here, from escaped parts or from the
literal markup of this module. Tag and attribute names are always literals of our code.
URL attributes (`href`, `src`, `action`) must be relative or http(s), so no `javascript:`
URL can be made from data. Pages carry no script at all (the CSP forbids them).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from typing import Any

VOID = frozenset({"meta", "link", "br", "input", "hr", "img"})
_URL_ATTRS = frozenset({"href", "src", "action"})
_SAFE_URL = re.compile(r"(https?://|[./?#]|[A-Za-z0-9_~+-][^:]*(?:[/?#]|$))", re.IGNORECASE)


class Html(str):
    """Markup that is safe as it is."""

    __slots__ = ()


def escape(value: Any) -> Html:
    if isinstance(value, Html):
        return value
    return Html(html.escape(str(value), quote=True))


def _children(children: Iterable[Any]) -> Iterable[str]:
    for child in children:
        if child is None or child is False:
            continue
        if isinstance(child, list | tuple) or (
            not isinstance(child, str) and isinstance(child, Iterable)
        ):
            yield from _children(child)
        else:
            yield escape(child)


def _attribute(name: str, value: Any) -> str:
    name = name.rstrip("_").replace("_", "-")
    if value is True:
        return f" {name}"
    text = str(value)
    if name in _URL_ATTRS and not _SAFE_URL.match(text):
        raise ValueError(f"refusing a {name} that is neither relative nor http(s)")
    return f' {name}="{escape(text)}"'


def el(tag: str, *children: Any, **attrs: Any) -> Html:
    """An element; attributes that are None or False are left out, True is a bare one;
    `class_` is `class`, `aria_label` is `aria-label`."""
    opened = tag + "".join(_attribute(k, v) for k, v in attrs.items() if v not in (None, False))
    if tag in VOID:
        return Html(f"<{opened}>")
    return Html(f"<{opened}>{''.join(_children(children))}</{tag}>")


def join(*parts: Any) -> Html:
    return Html("".join(_children(parts)))


def document(title: str, stylesheet: str, *body: Any) -> Html:
    """A whole page: no script, one stylesheet of our own."""
    head = el(
        "head",
        el("meta", charset="utf-8"),
        el("meta", name="viewport", content="width=device-width, initial-scale=1"),
        el("meta", name="referrer", content="no-referrer"),
        el("title", title),
        el("link", rel="stylesheet", href=stylesheet),
    )
    return Html("<!DOCTYPE html>\n" + el("html", head, el("body", *body), lang="en") + "\n")


CSS = """
:root { color-scheme: light dark; --muted: #6b7280; --ok: #15803d; --bad: #b91c1c;
        --line: #d1d5db; --cache: #2563eb; --upstream: #f59e0b; --bytes: #7c3aed; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 72rem;
       padding: 1rem 1.5rem 3rem; }
header { display: flex; gap: 1rem; align-items: baseline; flex-wrap: wrap;
         border-bottom: 1px solid var(--line); padding-bottom: .5rem; }
header .brand { font-weight: 700; font-size: 1.2rem; }
h1 { font-size: 1.4rem; margin: 1.2rem 0 .4rem; }
h2 { font-size: 1.15rem; margin: 1.6rem 0 .4rem; }
h3 { font-size: 1rem; margin: 1rem 0 .3rem; }
table { border-collapse: collapse; width: 100%; margin: .4rem 0 1rem; }
th, td { text-align: left; padding: .3rem .6rem .3rem 0; border-bottom: 1px solid var(--line);
         vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .9em; }
.sha { word-break: break-all; font-size: .8em; }
pre { background: rgba(127,127,127,.12); padding: .7rem 1rem; overflow-x: auto;
      border-radius: 4px; }
.muted { color: var(--muted); }
.ok { color: var(--ok); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
.tag { display: inline-block; padding: 0 .4rem; border-radius: 3px; font-size: .8em;
       border: 1px solid var(--line); }
form.filter { margin: .6rem 0; display: flex; gap: .5rem; }
nav.pages { display: flex; gap: 1rem; margin: .5rem 0; }
.snippets pre { white-space: pre-wrap; overflow-wrap: anywhere; }
svg.chart { width: 100%; max-width: 48rem; height: auto; }
svg.chart .cache { fill: var(--cache); }
svg.chart .upstream { fill: var(--upstream); }
svg.chart .bytes { fill: none; stroke: var(--bytes); stroke-width: 2; }
svg.chart .axis { stroke: var(--line); }
svg.chart text { font-size: 11px; fill: var(--muted); }
.legend .cache { color: var(--cache); } .legend .upstream { color: var(--upstream); }
.legend .bytes { color: var(--bytes); }
"""
