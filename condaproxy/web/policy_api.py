"""The supply-chain policy as operators see it (issue 13); both need an admin token.

GET /api/policy                   the effective rules, and which channels they touch
GET /api/policy/<channel>/held    each record the channel's views hold back or deny
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..rules.auth import require
from ..settings import Settings
from .requests import api_path, known_channel, who_is_asking
from .services import Services

POLICY = ("api", "policy")


def policy_routes(settings: Settings, services: Callable[[], Services]) -> list[Route]:
    rules = settings.policy_rules()

    async def effective(request: Request) -> JSONResponse:
        who, presented = who_is_asking(request, settings)
        require(who, presented, "*", "admin")
        body = rules.public()
        body["active_channels"] = sorted(n for n in settings.channels if rules.active(n))
        return JSONResponse(body)

    async def held(request: Request) -> JSONResponse:
        who, presented = who_is_asking(request, settings)
        name = known_channel(api_path(request, POLICY).removesuffix("/held"), settings, who)
        require(who, presented, name, "admin")
        policing = services().proxy.policing
        channel = settings.channels[name]
        if policing is None or not policing.active(name):
            return JSONResponse({"channel": name, "active": False, "held": []})
        return JSONResponse({"channel": name, "active": True, "held": await policing.held(channel)})

    return [
        Route("/api/policy", effective, methods=["GET"]),
        Route("/api/policy/{rest:path}/held", held, methods=["GET"]),
    ]
