"""Loopback stand-ins of the public registries the crawler reads, real HTTP servers answering in the
shapes their published API documentation gives:

- the official MCP registry (https://registry.modelcontextprotocol.io/docs, "GET /v0.1/servers"):
  ``?limit&cursor&updated_since&search``, ``{"servers": [{"server": <server.json>, "_meta":
  {"io.modelcontextprotocol.registry/official": {status, publishedAt, updatedAt, isLatest}}}],
  "metadata": {"nextCursor", "count"}}``, an opaque cursor;
- npm's search API (https://github.com/npm/registry/blob/main/docs/REGISTRY-API.md, "GET
  /-/v1/search"): ``?text&size&from``, ``{"objects": [{"package": {name, version, description,
  keywords, date, links, publisher}, "score", "searchScore"}], "total", "time"}``;
- PyPI's JSON API (https://docs.pypi.org/api/json/, "GET /pypi/<project>/json"): ``{"info": {name,
  version, summary, project_urls, ...}, "releases", "urls"}``, 404 for an unknown project.

``hits`` records every request; ``fail`` names paths that answer 503 (a registry in trouble)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from wemcp.devstack.testing import serve_app

OFFICIAL = "io.modelcontextprotocol.registry/official"


def registry_entry(name: str, version: str, *, npm: str | None = None, pypi: str | None = None,
                   remote: str | None = None, updated: str = "2026-11-01T00:00:00Z", status: str = "active",
                   latest: bool = True, description: str = "") -> dict[str, Any]:
    server: dict[str, Any] = {"$schema": "https://static.modelcontextprotocol.io/schemas/2025-10-17/server.schema.json",
                              "name": name, "description": description or f"{name} does things",
                              "version": version,
                              "repository": {"url": f"https://github.com/{name.split('/')[-1]}", "source": "github"}}
    if npm:
        server["packages"] = [{"registryType": "npm", "registryBaseUrl": "https://registry.npmjs.org",
                               "identifier": npm, "version": version, "transport": {"type": "stdio"},
                               "environmentVariables": [{"name": "API_KEY", "isSecret": True, "isRequired": True,
                                                         "description": "the service's key"}]}]
    if pypi:
        server["packages"] = [{"registryType": "pypi", "registryBaseUrl": "https://pypi.org", "identifier": pypi,
                               "version": version, "runtimeHint": "uvx", "transport": {"type": "stdio"}}]
    if remote:
        server["remotes"] = [{"type": "streamable-http", "url": remote}]
    return {"server": server, "_meta": {OFFICIAL: {"status": status, "publishedAt": "2026-10-01T00:00:00Z",
                                                   "updatedAt": updated, "isLatest": latest}}}


class Registries:
    def __init__(self) -> None:
        self.registry: list[dict[str, Any]] = []
        self.npm: dict[str, list[dict[str, Any]]] = {}  # search text -> package objects
        self.pypi: dict[str, dict[str, Any]] = {}  # project name -> info
        self.hits: list[str] = []
        self.fail: set[str] = set()
        self.fail_cursor = False  # the registry answers 503 to every page after the first
        self.base = ""

    # -- the official registry -------------------------------------------------------------------
    async def servers(self, request: Request) -> Response:
        self.hits.append(str(request.url.path) + "?" + str(request.url.query))
        if "registry" in self.fail or (self.fail_cursor and request.query_params.get("cursor")):
            return JSONResponse({"title": "Service Unavailable", "status": 503}, status_code=503)
        q = request.query_params
        limit = int(q.get("limit", "30"))
        rows = sorted(self.registry, key=lambda e: e["server"]["name"])
        since = q.get("updated_since")
        if since:
            t = datetime.fromisoformat(since.replace("Z", "+00:00"))
            rows = [e for e in rows if datetime.fromisoformat(e["_meta"][OFFICIAL]["updatedAt"].replace(
                "Z", "+00:00")) >= t]
        start = 0
        if q.get("cursor"):
            after = base64.urlsafe_b64decode(q["cursor"]).decode()
            start = next((i + 1 for i, e in enumerate(rows) if e["server"]["name"] == after), len(rows))
        page = rows[start:start + limit]
        meta: dict[str, Any] = {"count": len(page)}
        if start + limit < len(rows):
            meta["nextCursor"] = base64.urlsafe_b64encode(page[-1]["server"]["name"].encode()).decode()
        return JSONResponse({"servers": page, "metadata": meta})

    # -- npm search ------------------------------------------------------------------------------
    async def search(self, request: Request) -> Response:
        self.hits.append(str(request.url.path) + "?" + str(request.url.query))
        if "npm" in self.fail:
            return Response("upstream trouble", status_code=503)
        q = request.query_params
        objs = self.npm.get(q.get("text", ""), [])
        size, start = int(q.get("size", "20")), int(q.get("from", "0"))
        page = [{"package": p, "score": {"final": 0.5, "detail": {"quality": 0.5, "popularity": 0.1,
                                                                  "maintenance": 0.9}}, "searchScore": 1.0}
                for p in objs[start:start + size]]
        return JSONResponse({"objects": page, "total": len(objs), "time": datetime.now(UTC).isoformat()})

    # -- PyPI JSON -------------------------------------------------------------------------------
    async def project(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.hits.append(f"/pypi/{name}/json")
        info = self.pypi.get(name)
        if info is None:
            return JSONResponse({"message": "Not Found"}, status_code=404)
        return JSONResponse({"info": info, "releases": {info["version"]: []}, "urls": [], "vulnerabilities": []})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v0.1/servers", self.servers), Route("/-/v1/search", self.search),
                                 Route("/pypi/{name}/json", self.project)])


def npm_package(name: str, version: str, description: str = "") -> dict[str, Any]:
    return {"name": name, "scope": name[1:].split("/")[0] if name.startswith("@") else "unscoped",
            "version": version, "description": description or f"{name}: an MCP server",
            "keywords": ["mcp", "mcp-server"], "date": "2026-11-20T10:00:00.000Z",
            "links": {"npm": f"https://www.npmjs.com/package/{name}", "homepage": f"https://example.com/{name}",
                      "repository": f"https://github.com/acme/{name.split('/')[-1]}"},
            "publisher": {"username": "acme", "email": "dev@example.com"}, "maintainers": []}


def pypi_info(name: str, version: str, summary: str = "") -> dict[str, Any]:
    return {"name": name, "version": version, "summary": summary or f"{name}: an MCP server",
            "project_urls": {"Homepage": f"https://example.com/{name}"}, "requires_python": ">=3.10",
            "yanked": False}


@asynccontextmanager
async def stand_ins() -> AsyncIterator[Registries]:
    reg = Registries()
    async with serve_app(reg.app()) as base:
        reg.base = base
        yield reg
