"""The proxy's own pages, for people: `/` (status), `/<channel>/` and `/<channel>/<subdir>/`
(browsing), each as HTML or, to `Accept: application/json`, as JSON; and their stylesheet.

Who may see what follows the channel files' rule: a private channel is listed on `/` only to
a read token, and its pages answer 401 without one. Tokens come in every accepted form
(header, basic auth, `/t/<token>/`); `/?signin=1` asks a browser for basic auth. GET and
HEAD only. The work of a page view is bounded: the overview is shared and refreshed at most
every 30 s (at once after an upload or delete), listings are made once per snapshot, and no
page asks an upstream anything a client's metadata request would not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..cache.instruments import Metrics
from ..ops.overview import OverviewCache, recent_uploads, take_overview
from ..ops.series import Sampler
from ..rules.auth import Unauthorized, identify, presented_token, require
from ..rules.errors import MethodNotAllowed, NotFound
from ..rules.forwarded import Network, scope_base
from ..rules.redact import Redactor
from ..rules.routing import SUBDIR_RE, UnknownChannel, channel_of
from ..settings import Settings
from .browse import Browser
from .html import CSS
from .page_context import PageRequest, PageResponse, query_of
from .services import Services
from .status import status_page

STYLESHEET = "/static/condaproxy.css"


class StatusPages:
    def __init__(
        self,
        settings: Settings,
        services: Callable[[], Services],
        metrics: Metrics,
        trusted: tuple[Network, ...] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.services, self.metrics = settings, services, metrics
        self.trusted, self.clock = trusted, clock
        self.redact = Redactor(settings.secrets())
        self.browser = Browser(settings, self.redact)
        self.overview: OverviewCache | None = None
        self.sampler: Sampler | None = None

    def start(self, built: Services) -> None:
        """Called once the services exist: the shared overview and the minute sampler."""

        def take(now: float) -> Any:
            channels = self.settings.channels
            return take_overview(built.admin, built.index, built.uploads, channels, now)

        def uploads_version() -> object:
            return tuple(built.uploads.changes(name) for name in self.settings.channels)

        def uploads_now() -> dict[str, list[Any]]:
            return {name: recent_uploads(built.uploads, name) for name in self.settings.channels}

        self.overview = OverviewCache(take, self.clock, uploads_version, uploads_now)
        self.sampler = Sampler(built.index, self.metrics, self.clock)
        self.sampler.start()

    async def stop(self) -> None:
        if self.sampler is not None:
            await self.sampler.stop()

    async def respond(
        self,
        scope: dict[str, Any],
        headers: Mapping[str, str],
        token: str | None,
        segments: list[str],
    ) -> PageResponse:
        if scope["method"] not in ("GET", "HEAD"):
            raise MethodNotAllowed(scope["method"])
        query = query_of(scope)
        presented = presented_token(headers, token)
        who = identify(presented, self.settings.tokens.values())
        base = scope_base(scope, headers, self.trusted, self.settings.server.external_url)
        req = PageRequest(
            scope["method"],
            headers,
            query,
            token,
            segments,
            who,
            presented is not None,
            base,
            self.clock(),
        )
        built = self.services()
        assert self.overview is not None, "pages answer only once the services are started"
        if not segments:
            if query.get("signin") and who is None:
                raise Unauthorized(
                    "sign in with a read token (as the password) to see private channels"
                )
            return status_page(req, self.settings, built, await self.overview.get(), self.redact)
        name = channel_of(segments, self.settings.channels)
        if name is None:
            raise UnknownChannel(f"unknown channel in path '/{'/'.join(segments)}/'", token=token)
        scope.setdefault("state", {})["channel"] = name
        channel = self.settings.channels[name]
        if channel.private:
            require(who, presented is not None, name, "read")
        tail = segments[len(name.split("/")) :]
        if not tail:
            overview = await self.overview.get()
            return self.browser.channel_page(req, built, channel, overview)
        if len(tail) == 1 and SUBDIR_RE.match(tail[0]):
            return await self.browser.subdir_page(req, built, channel, tail[0])
        raise NotFound(
            f"'/{'/'.join(segments)}/' is not a page: pages are /, /<channel>/ and "
            "/<channel>/<subdir>/"
        )


def static_routes() -> list[Route]:
    async def stylesheet(request: Request) -> Response:
        return Response(
            CSS,
            media_type="text/css",
            headers={"x-content-type-options": "nosniff", "cache-control": "public, max-age=3600"},
        )

    return [Route(STYLESHEET, stylesheet, methods=["GET", "HEAD"])]
