"""The gateway's own endpoints: aggregated health, the merged public OpenAPI document, docs, and
the catch-all that routes ``/api/v1/...`` to the owning service."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from wemcp.common.errors import NotFound
from wemcp.common.identity import Identity
from wemcp.gateway.deps import GatewayState, RuntimeOf, State
from wemcp.gateway.proxy import forward
from wemcp.gateway.routing import owner_of
from wemcp.gateway.wiring import refuse_server_scoped

router = APIRouter()
OPENAPI_TTL_SECONDS = 30.0


@router.get("/healthz", include_in_schema=False)
async def healthz(gw: State, runtime: RuntimeOf) -> JSONResponse:
    """Every service's health, fetched concurrently; 200 only when all are green."""

    async def one(name: str, url: str) -> tuple[str, dict[str, Any]]:
        t0 = time.perf_counter()
        try:
            r = await gw.client.get(f"{url}/healthz", timeout=gw.settings.health_timeout_seconds)
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            status = "ok" if r.status_code == 200 else "degraded"
            return name, {"status": status, "ms": round((time.perf_counter() - t0) * 1000, 2),
                          "checks": body.get("checks", {})}
        except Exception as exc:
            return name, {"status": "down", "error": str(exc)[:200] or type(exc).__name__}

    own, results = await asyncio.gather(
        runtime.health(), asyncio.gather(*(one(n, u) for n, u in gw.settings.service_urls().items())))
    services = {"gateway": {"status": own["status"], "checks": own["checks"]}, **dict(results)}
    ok = all(s["status"] == "ok" for s in services.values())
    return JSONResponse({"status": "ok" if ok else "degraded", "services": services},
                        status_code=200 if ok else 503)


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request, gw: State) -> JSONResponse:
    now = time.monotonic()
    if gw.openapi_cache is None or now - gw.openapi_cache[0] > OPENAPI_TTL_SECONDS:
        gw.openapi_cache = (now, await _merged_openapi(request, gw))
    return JSONResponse(gw.openapi_cache[1])


@router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    # every asset from this origin (web/dist/assets/swagger, copied from swagger-ui-dist by the build)
    return get_swagger_ui_html(openapi_url="/openapi.json", title="WeMcp API",
                               swagger_js_url="/assets/swagger/swagger-ui-bundle.js",
                               swagger_css_url="/assets/swagger/swagger-ui.css",
                               swagger_favicon_url="/assets/swagger/favicon-32x32.png")


async def _merged_openapi(request: Request, gw: GatewayState) -> dict[str, Any]:
    """One document for the public API: every service's ``/api/v1`` paths and their schemas, plus
    the gateway's own public paths."""
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "WeMcp API", "version": request.app.version,
                 "description": "The public API of WeMcp, served through the gateway."},
        "paths": {}, "components": {"schemas": {}}, "tags": [],
    }
    own = request.app.openapi()
    _merge(doc, own, "gateway")

    async def fetch(name: str, url: str) -> tuple[str, dict[str, Any] | None]:
        try:
            r = await gw.client.get(f"{url}/openapi.json", timeout=gw.settings.health_timeout_seconds)
            return name, r.json() if r.status_code == 200 else None
        except Exception:
            return name, None

    missing = []
    for name, part in await asyncio.gather(*(fetch(n, u) for n, u in gw.settings.service_urls().items())):
        if part is None:
            missing.append(name)
        else:
            _merge(doc, part, name)
    if missing:
        doc["info"]["x-unavailable-services"] = missing
    return doc


def _merge(doc: dict[str, Any], part: dict[str, Any], service: str) -> None:
    for path, item in part.get("paths", {}).items():
        if path.startswith(("/api/", "/v1/", "/v0.1/", "/mcp")):
            doc["paths"].setdefault(path, {}).update(item)
    for name, schema in part.get("components", {}).get("schemas", {}).items():
        doc["components"]["schemas"].setdefault(name, schema)
    for scheme, spec in part.get("components", {}).get("securitySchemes", {}).items():
        doc["components"].setdefault("securitySchemes", {}).setdefault(scheme, spec)


async def _identity(request: Request, gw: GatewayState) -> Identity | None:
    """The verified caller, or None for anonymous calls. Verification (JWT, platform API keys) is
    plugged in by the auth integration as ``GatewayState.verifier``."""
    if gw.verifier is None:
        return None
    ident = await gw.verifier(request)
    refuse_server_scoped(request)
    return ident


@router.api_route("/api/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                  include_in_schema=False)
async def route_api(path: str, request: Request, gw: State) -> Response:
    service = owner_of(path)
    if service is None:
        raise NotFound(f"no API at /api/v1/{path}")
    return await forward(request, gw.client, service, gw.urls[service], gw.settings.max_body_bytes,
                         await _identity(request, gw))


@router.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                  include_in_schema=False)
async def route_openai(path: str, request: Request, gw: State) -> Response:
    """The OpenAI-compatible API (``/v1/chat/completions``, ``/v1/models``, ``/v1/agents/...``) is
    served by the agents service; streaming responses pass through unbuffered."""
    return await forward(request, gw.client, "agents", gw.urls["agents"], gw.settings.max_body_bytes,
                         await _identity(request, gw))


@router.api_route("/v0.1/{path:path}", methods=["GET", "POST"], include_in_schema=False)
async def route_registry(path: str, request: Request, gw: State) -> Response:
    """The official-registry-compatible API (``/v0.1/servers`` ...) is served by the catalog."""
    return await forward(request, gw.client, "catalog", gw.urls["catalog"], gw.settings.max_body_bytes,
                         await _identity(request, gw))
