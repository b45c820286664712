"""`condaproxy purge | prefetch | stats`: thin clients of the admin API, for operators who would
rather not write curl. The URL and token come from flags or CONDAPROXY_URL / CONDAPROXY_TOKEN;
the token travels as a Bearer header, never in a URL."""

from __future__ import annotations

import json
import sys
import time
from typing import Any
from urllib.parse import quote

import httpx

from ..rules.redact import mask_urls

URL_ENV = "CONDAPROXY_URL"
TOKEN_ENV = "CONDAPROXY_TOKEN"
DEFAULT_URL = "http://127.0.0.1:8080"


class ClientError(Exception):
    """The proxy refused or could not be reached; the message says which."""


def url_path(*parts: str) -> str:
    """`/`-joined, each segment percent-encoded, as the operator typed it: a `.` or `..`
    segment is sent encoded, so the proxy sees it and refuses it (400). httpx resolves
    literal dot segments before sending, so `purge cf/../team` purged the channel `team`
    and `prefetch cf/.. linux-64` named another route."""
    segments = [seg for part in parts for seg in part.split("/")]
    return "/".join(
        "%2E" * len(seg) if seg in (".", "..") else quote(seg, safe="") for seg in segments
    )


class AdminClient:
    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            where = mask_urls(str(self._http.base_url))  # `--url https://user:pw@host` too
            raise ClientError(f"cannot reach {where}: {type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:300]}
        if response.status_code >= 400:
            raise ClientError(f"HTTP {response.status_code}: {body.get('error', body)}")
        return body

    def purge(self, scope: str, package: str | None, metadata_only: bool) -> Any:
        params: dict[str, str] = {}
        if package:
            params["package"] = package
        if metadata_only:
            params["metadata_only"] = "true"
        path = "/api/cache" + ("/" + url_path(scope.strip("/")) if scope.strip("/") else "")
        return self.call("DELETE", path, params=params)

    def stats(self) -> Any:
        return self.call("GET", "/api/cache/stats")

    def prefetch(self, channel: str, subdir: str, items: list[str], deps: bool) -> Any:
        body = {"packages": items, "with_dependencies": deps}
        return self.call("POST", f"/api/cache/{url_path(channel, subdir)}/prefetch", json=body)

    def job(self, job_id: str) -> dict[str, Any] | None:
        for job in self.stats().get("prefetch", []):
            if job.get("id") == job_id:
                return dict(job)
        return None


def follow_prefetch(client: AdminClient, job: dict[str, Any], poll: float = 0.5) -> dict[str, Any]:
    """Show a job's progress as a bar until it is done or failed."""
    from tqdm import tqdm

    with tqdm(total=job.get("total") or None, unit="file", desc="prefetch", file=sys.stderr) as bar:
        while job.get("state") in ("resolving", "fetching"):
            time.sleep(poll)
            job = client.job(job["id"]) or {**job, "state": "lost"}
            if job.get("total") and bar.total != job["total"]:
                bar.reset(total=job["total"])
            done = int(job.get("fetched", 0)) + len(job.get("failures", []))
            bar.update(done - bar.n)
            bar.set_postfix(state=job.get("state"), cached=job.get("already_cached", 0))
    return job


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))
