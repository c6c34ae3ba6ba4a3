"""REST for the web frontend, served by the gateway itself (ahead of the catalog catch-all):

- ``GET /api/v1/servers/{slug}/tools``: the server's tools (from ``server.deployed``'s introspection,
  or live from the server when the event carried none, or the OpenAPI operations);
- ``POST /api/v1/servers/{slug}/tools/{tool}/call`` ``{"arguments": {...}}``: try it out, with the
  same key resolution, quota and call event as an MCP call;
- ``POST /api/v1/bundles`` ``{"servers": [...], "name"}`` / ``GET /api/v1/bundles/{id}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from wemcp.common.errors import AppError, BadGateway, NotFound, Unauthorized, Unprocessable
from wemcp.common.http import problem
from wemcp.common.identity import Identity
from wemcp.gateway.context import CallContext
from wemcp.gateway.deps import McpParts
from wemcp.gateway.rpc import Refused
from wemcp.gateway.schemas import BundleCreate, BundleRead, ToolCall, ToolList
from wemcp.gateway.upstream import UpstreamError

if TYPE_CHECKING:
    from wemcp.gateway.wiring import Mcp

router = APIRouter(prefix="/api/v1", tags=["mcp"])
Slug = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Tool = Annotated[str, Path(min_length=1, max_length=200)]


async def _caller(request: Request, mcp: Mcp) -> tuple[Identity | None, Any]:
    try:
        return await mcp.router.pipeline.identify(request.scope)
    except Refused as r:
        raise _as_error(r) from None


def _as_error(r: Refused) -> AppError:
    err = AppError(r.detail, headers=r.headers)
    err.status, err.title = r.status, r.title
    return err


async def _routed(request: Request, mcp: Mcp, slug: str, tool: str | None = None) -> CallContext:
    """The caller's context for a server (identify, route; refusals as problems, as over MCP)."""
    pipeline = mcp.router.pipeline
    try:
        ctx = await pipeline.enter(request.scope, slug)
        ctx.route = pipeline.route_for(slug, ctx.grant)
    except Refused as r:
        raise _as_error(r) from None
    ctx.tool = tool
    return ctx


@router.get("/servers/{slug}/tools", response_model=ToolList)
async def list_tools(slug: Slug, request: Request, mcp: McpParts) -> dict[str, Any]:
    ctx = await _routed(request, mcp, slug)
    route = ctx.route
    assert route is not None
    if route.kind == "mcp" and route.tools:
        tools = [{"name": t["name"], "title": t.get("title"), "description": t.get("description"),
                  "inputSchema": t.get("input_schema") or t.get("inputSchema") or {}} for t in route.tools]
    else:
        try:
            tools = await mcp.router.pipeline.list_tools(ctx)
        except UpstreamError as exc:
            raise BadGateway(f"the server did not list its tools: {exc}") from None
    return {"server": slug, "items": tools, "total": len(tools)}


@router.post("/servers/{slug}/tools/{tool}/call")
async def call_tool(slug: Slug, tool: Tool, body: ToolCall, request: Request, mcp: McpParts) -> JSONResponse:
    """Try a tool out: the same pipeline as an MCP call (keys, quota, call event)."""
    ctx = await _routed(request, mcp, slug, tool)
    reply = await mcp.router.pipeline.call_tool(ctx, body.arguments)
    decision = ctx.decision
    headers = decision.headers() if decision is not None else {}
    if "error" in reply:
        err = reply["error"]
        if decision is not None and not decision.allowed:
            p = decision.problem()
            return JSONResponse(p, status_code=p["status"], headers=headers, media_type="application/problem+json")
        code = err.get("code")
        if code == -32602 and "missing" in (err.get("data") or {}):
            raise Unprocessable(err["message"], extra={"missing": err["data"]["missing"]})
        if code == -32602:
            raise NotFound(err["message"])
        return problem(502, "Bad Gateway", str(err.get("message")), headers=headers, code=code)
    assert ctx.resolved is not None
    return JSONResponse({"server": slug, "tool": tool, "key_source": ctx.resolved.source, "result": reply["result"]},
                        headers=headers)


@router.post("/bundles", status_code=201, response_model=BundleRead)
async def create_bundle(body: BundleCreate, request: Request, mcp: McpParts) -> dict[str, Any]:
    ident, grant = await _caller(request, mcp)
    if ident is None:
        raise Unauthorized("sign in to create a bundle")
    doc = await mcp.bundles.create(ident, body.servers, body.name, grant)
    return {**doc, "url": f"/mcp/bundles/{doc['id']}"}


@router.get("/bundles/{bid}", response_model=BundleRead)
async def get_bundle(bid: Annotated[str, Path(max_length=40)], request: Request, mcp: McpParts) -> dict[str, Any]:
    ident, _ = await _caller(request, mcp)
    doc = await mcp.bundles.get(bid)
    if doc is None or ident is None or doc["owner"] != str(ident.user_id):
        raise NotFound("no such bundle")
    return {**doc, "url": f"/mcp/bundles/{doc['id']}"}
