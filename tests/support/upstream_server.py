"""A real conda channel server for tests: serves a directory over HTTP on 127.0.0.1 with strong
ETags, Last-Modified, 304s and Range, counts requests per path, and injects faults on demand.

Run as `python -m tests.support.upstream_server DIR PORT`. Control endpoints:
  GET  /_stats            -> {"GET /path": n, ...}
  POST /_mode?mode=M      -> ok | down (503 for all) | truncate (half the body, then close)
                             | corrupt (flip bytes in packages) | slow (sleep 0.2 s per chunk)
                             | rate:N (bodies at N MiB/s per connection, a link to a CDN)
  POST /_reset            -> clear the counters and every override
  POST /_override         -> JSON {"path": "/x", "status": 200, "headers": {...},
                             "body_b64": "...", "delay": seconds before the body,
                             "break_after": send this many body bytes, then drop the connection,
                             "trickle": seconds between 1-byte chunks,
                             "pause_after": [n, seconds]: n bytes, a pause, the rest}:
                             a hostile answer for one path (exact match), until reset
  GET  /_seen             -> [{"path", "method", "headers"}] of the last 200 requests
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import sys
from email.utils import formatdate
from pathlib import Path

import uvicorn

COUNTS: collections.Counter[str] = collections.Counter()
MODE = {"mode": "ok"}
OVERRIDES: dict[str, dict] = {}
SEEN: collections.deque[dict] = collections.deque(maxlen=200)


def make_app(root: Path):  # type: ignore[no-untyped-def]
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path, method = scope["path"], scope["method"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if path == "/_stats":
            import json

            return await _send(send, 200, json.dumps(dict(COUNTS)).encode(), "application/json")
        if path == "/_mode":
            query = scope["query_string"].decode()
            MODE["mode"] = query.split("=", 1)[1]
            return await _send(send, 200, b"{}", "application/json")
        if path == "/_reset":
            COUNTS.clear()
            OVERRIDES.clear()
            SEEN.clear()
            return await _send(send, 200, b"{}", "application/json")
        if path == "/_override":
            import json

            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            spec = json.loads(body)
            OVERRIDES[spec["path"]] = spec
            return await _send(send, 200, b"{}", "application/json")
        if path == "/_seen":
            import json

            return await _send(send, 200, json.dumps(list(SEEN)).encode(), "application/json")
        COUNTS[f"{method} {path}"] += 1
        SEEN.append(
            {
                "path": path,
                "method": method,
                "headers": headers,
                "raw_path": (scope.get("raw_path") or b"").decode("latin-1"),
            }
        )
        if path in OVERRIDES:
            return await _override(send, method, OVERRIDES[path])
        if MODE["mode"] == "down":
            return await _send(send, 503, b"upstream is down", "text/plain")
        target = (root / path.lstrip("/")).resolve()
        if root not in target.parents or not target.is_file():
            return await _send(send, 404, b"not found", "text/plain")
        data = target.read_bytes()
        stat = target.stat()
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        modified = formatdate(stat.st_mtime, usegmt=True)
        common = [
            (b"etag", etag.encode()),
            (b"last-modified", modified.encode()),
            (b"accept-ranges", b"bytes"),
        ]
        if headers.get("if-none-match") == etag:
            await send({"type": "http.response.start", "status": 304, "headers": common})
            return await send({"type": "http.response.body", "body": b""})
        if MODE["mode"] == "corrupt" and path.endswith((".conda", ".tar.bz2")):
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        status = 200
        rng = headers.get("range")
        if rng and rng.startswith("bytes=") and "," not in rng:
            first, _, last = rng[6:].partition("-")
            start = int(first) if first else len(data) - int(last)
            end = int(last) + 1 if first and last else len(data)
            common.append((b"content-range", f"bytes {start}-{end - 1}/{len(data)}".encode()))
            data, status = data[start:end], 206
        hdrs = [
            *common,
            (b"content-length", str(len(data)).encode()),
            (b"content-type", b"application/octet-stream"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        if method == "HEAD":
            return await send({"type": "http.response.body", "body": b""})
        if MODE["mode"] == "truncate":
            await send(
                {"type": "http.response.body", "body": data[: len(data) // 2], "more_body": True}
            )
            raise ConnectionAbortedError("truncated on purpose")
        step = 1 << 20
        for i in range(0, max(len(data), 1), step):
            if MODE["mode"] == "slow":
                await asyncio.sleep(0.2)
            elif MODE["mode"].startswith("rate:"):
                await asyncio.sleep(1 / float(MODE["mode"][5:]))  # a 1 MiB chunk at N MiB/s
            more = i + step < len(data)
            await send(
                {"type": "http.response.body", "body": data[i : i + step], "more_body": more}
            )

    return app


async def _override(send, method, spec):  # type: ignore[no-untyped-def]
    import base64

    body = base64.b64decode(spec.get("body_b64", ""))
    headers = {"content-type": "application/octet-stream", **spec.get("headers", {})}
    if "content-length" not in {k.lower() for k in headers} and "trickle" not in spec:
        headers["content-length"] = str(len(body))
    await send(
        {
            "type": "http.response.start",
            "status": spec.get("status", 200),
            "headers": [(k.lower().encode(), str(v).encode()) for k, v in headers.items()],
        }
    )
    if method == "HEAD":
        return await send({"type": "http.response.body", "body": b""})
    if spec.get("delay"):
        await asyncio.sleep(spec["delay"])
    if "break_after" in spec:
        await send(
            {"type": "http.response.body", "body": body[: spec["break_after"]], "more_body": True}
        )
        raise ConnectionAbortedError("broken off on purpose")
    if "pause_after" in spec:  # [n, seconds]: n bytes, a pause, then the rest
        n, pause = spec["pause_after"]
        await send({"type": "http.response.body", "body": body[:n], "more_body": True})
        await asyncio.sleep(pause)
        return await send({"type": "http.response.body", "body": body[n:]})
    if "trickle" in spec:
        for i in range(len(body)):
            await send({"type": "http.response.body", "body": body[i : i + 1], "more_body": True})
            await asyncio.sleep(spec["trickle"])
        return await send({"type": "http.response.body", "body": b""})
    await send({"type": "http.response.body", "body": body})


async def _send(send, status, body, ctype):  # type: ignore[no-untyped-def]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", ctype.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    directory, port = Path(sys.argv[1]).resolve(), int(sys.argv[2])
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    uvicorn.run(make_app(directory), host="127.0.0.1", port=port, log_level="warning")
