"""The OpenAPI 3.1 description of condaproxy's HTTP surface, served at /openapi.json: every
endpoint an operator or a tool calls, its inputs, who may call it, and its errors (always the
JSON body `{"error": ..., "status": ...}`). Pure data; `document()` builds it."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_AUTH: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearer": []}, {"basic": []}]


def _errors(*codes: int) -> dict[str, Any]:
    meanings = {
        400: "the request is malformed (the body says which part)",
        401: "no token, or an unknown one",
        403: "the token's role is not enough",
        404: "no such channel, file or endpoint",
        408: "the request body stopped arriving (uploads.read_timeout)",
        409: "the file exists (use force=true), or an expectation contradicts the channel",
        413: "over uploads.max_upload_size or the unpack budget",
        414: "the path or a segment is too long",
        502: "the upstream failed; the body names it",
        503: "the answer cannot be built right now; retry",
        504: "the upstream timed out",
    }
    return {
        str(code): {
            "description": meanings[code],
            "content": {"application/json": {"schema": _ERROR}},
        }
        for code in codes
    }


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or {"type": "object"}}},
    }


def _page(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "text/html": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }


_CHANNEL = {
    "name": "channel",
    "in": "path",
    "required": True,
    "description": "a configured channel name (it may hold `/`)",
    "schema": {"type": "string"},
}
_SUBDIR = {
    "name": "subdir",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^(noarch|[a-z][a-z0-9]*-[a-z0-9_]+)$"},
}
_FILENAME = {
    "name": "filename",
    "in": "path",
    "required": True,
    "description": "<name>-<version>-<build>.conda or .tar.bz2",
    "schema": {"type": "string"},
}
_FORCE = {
    "name": "force",
    "in": "query",
    "description": "replace a file of the same name (true/false, 1/0, yes/no)",
    "schema": {"type": "string"},
}


def _channel_api() -> dict[str, Any]:
    listing = {"$ref": "#/components/schemas/Upload"}
    return {
        "/api/channels/{channel}/upload/{filename}": {
            "post": {
                "summary": "Upload one package (Quetz's API: quetz-client works unchanged)",
                "security": _AUTH,
                "parameters": [
                    _CHANNEL,
                    _FILENAME,
                    {"name": "sha256", "in": "query", "schema": {"type": "string"}},
                    _FORCE,
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                },
                "responses": {
                    "201": _json("the package, as listed", listing),
                    **_errors(400, 401, 403, 404, 408, 409, 413),
                },
            }
        },
        "/api/channels/{channel}/files": {
            "post": {
                "summary": "Upload packages as multipart `files` parts: all of them or none",
                "security": _AUTH,
                "parameters": [_CHANNEL, _FORCE],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "files": {
                                        "type": "array",
                                        "items": {"type": "string", "format": "binary"},
                                    },
                                    "force": {
                                        "type": "boolean",
                                        "description": "as the query's force (Quetz's form)",
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": _json("the packages", {"type": "object"}),
                    **_errors(400, 401, 403, 404, 408, 409, 413),
                },
            }
        },
        "/api/channels/{channel}/packages": {
            "get": {
                "summary": "The channel's uploads (a read token for a private channel)",
                "security": [*_AUTH, {}],
                "parameters": [_CHANNEL],
                "responses": {"200": _json("uploads"), **_errors(401, 403, 404)},
            }
        },
        "/api/channels/{channel}/packages/{subdir}/{filename}": {
            "delete": {
                "summary": "Delete an upload",
                "security": _AUTH,
                "parameters": [_CHANNEL, _SUBDIR, _FILENAME],
                "responses": {"200": _json("what was deleted"), **_errors(400, 401, 403, 404)},
            }
        },
    }


def _cache_api() -> dict[str, Any]:
    purge_params = [
        {"name": "package", "in": "query", "schema": {"type": "string"}},
        {"name": "metadata_only", "in": "query", "schema": {"type": "string"}},
    ]
    purge = {
        "summary": "Purge cached files and metadata (never uploads); admin token",
        "security": _AUTH,
        "responses": {"200": _json("what was removed"), **_errors(400, 401, 403, 404)},
    }
    return {
        "/api/cache/stats": {
            "get": {
                "summary": "Per channel: files, bytes, hits, misses; the store; prefetch jobs",
                "security": _AUTH,
                "responses": {"200": _json("statistics"), **_errors(401, 403)},
            }
        },
        "/api/cache": {"delete": {**purge, "parameters": purge_params}},
        "/api/cache/{scope}": {
            "delete": {
                **purge,
                "parameters": [
                    {
                        "name": "scope",
                        "in": "path",
                        "required": True,
                        "description": "<channel>[/<subdir>[/<filename>]]",
                        "schema": {"type": "string"},
                    },
                    *purge_params,
                ],
            }
        },
        "/api/cache/{channel}/{subdir}/prefetch": {
            "post": {
                "summary": "Warm the cache with file names or match specs (admin token)",
                "security": _AUTH,
                "parameters": [_CHANNEL, _SUBDIR],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Prefetch"}}
                    },
                },
                "responses": {"202": _json("the job"), **_errors(400, 401, 403, 404)},
            }
        },
    }


def _policy_api() -> dict[str, Any]:
    return {
        "/api/policy": {
            "get": {
                "summary": "The effective supply-chain policy (admin token)",
                "security": _AUTH,
                "responses": {"200": _json("the rules"), **_errors(401, 403)},
            }
        },
        "/api/policy/{channel}/held": {
            "get": {
                "summary": "Records the policy holds back or denies, with rule and release time",
                "security": _AUTH,
                "parameters": [_CHANNEL],
                "responses": {"200": _json("held records"), **_errors(401, 403, 404)},
            }
        },
    }


def _operations() -> dict[str, Any]:
    return {
        "/healthz": {"get": {"summary": "Alive", "responses": {"200": _json("ok")}}},
        "/readyz": {
            "get": {
                "summary": "Ready to serve; says whether caching is on and why not",
                "responses": {"200": _json("ready"), "503": _json("not ready")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics; private channel names only with a token",
                "responses": {
                    "200": {
                        "description": "text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/": {
            "get": {
                "summary": "The status page: version, the channels the viewer may read, upstream "
                "reachability, cache size, recent uploads, prefetch jobs; JSON to "
                "Accept: application/json",
                "responses": {"200": _page("the status page")},
            }
        },
        "/{channel}/": {
            "get": {
                "summary": "A channel's index: its subdirs, with copy-paste client snippets",
                "parameters": [_CHANNEL],
                "responses": {"200": _page("the channel index"), **_errors(401, 404)},
            }
        },
        "/{channel}/{subdir}/": {
            "get": {
                "summary": "A subdir's packages (size, sha256, cached or uploaded), paged and "
                "filtered, linking to downloads through the proxy",
                "parameters": [_CHANNEL, _SUBDIR],
                "responses": {"200": _page("the subdir index"), **_errors(400, 401, 404, 503)},
            }
        },
        "/{channel}/{subdir}/{file}": {
            "get": {
                "summary": "A channel file, as the upstream serves it (repodata variants, shard "
                "index, packages): what conda, mamba and pixi ask for",
                "parameters": [
                    _CHANNEL,
                    _SUBDIR,
                    {"name": "file", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {"description": "the file"},
                    "206": {"description": "a byte range"},
                    "304": {"description": "not modified"},
                    **_errors(400, 401, 404, 409, 414, 502, 503, 504),
                    "403": {
                        "description": "held or denied by the supply-chain policy (the body "
                        "names the rule and, for a cooldown, released_at)",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    },
                },
            }
        },
    }


def document(version: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "condaproxy",
            "version": version,
            "description": "A caching proxy for conda channels: its admin and upload API.",
        },
        "paths": {**_operations(), **_channel_api(), **_cache_api(), **_policy_api()},
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "status"],
                    "properties": {
                        "error": {"type": "string"},
                        "status": {"type": "integer"},
                    },
                },
                "Upload": {
                    "type": "object",
                    "properties": {
                        k: {"type": t}
                        for k, t in (
                            ("name", "string"),
                            ("version", "string"),
                            ("build", "string"),
                            ("subdir", "string"),
                            ("filename", "string"),
                            ("size", "integer"),
                            ("sha256", "string"),
                            ("uploaded_at", "number"),
                            ("uploaded_by", "string"),
                        )
                    },
                },
                "Prefetch": {
                    "oneOf": [
                        {"type": "array", "items": {"type": "string"}},
                        {
                            "type": "object",
                            "required": ["packages"],
                            "properties": {
                                "packages": {"type": "array", "items": {"type": "string"}},
                                "with_dependencies": {"type": "boolean"},
                            },
                            "additionalProperties": False,
                        },
                    ]
                },
            },
        },
    }
