"""An in-process proxy reachable at a URL: respx hands every request for `host` to a starlette
TestClient of the app, so a client that builds its own httpx.Client (ops/client.py, the CLI)
talks to the real app without a server process."""

from __future__ import annotations

import httpx
import respx
from starlette.testclient import TestClient

HOST = "proxy.test"
URL = f"http://{HOST}"


def bridge(router: respx.MockRouter, app: TestClient) -> respx.Route:
    def forward(request: httpx.Request) -> httpx.Response:
        headers = {k: v for k, v in request.headers.items() if k not in ("host", "content-length")}
        answer = app.request(
            request.method, request.url.raw_path.decode(), headers=headers, content=request.content
        )
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    return router.route(host=HOST).mock(side_effect=forward)
