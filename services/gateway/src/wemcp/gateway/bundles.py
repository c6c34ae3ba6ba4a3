"""Bundles: a user's chosen set of servers served as one MCP server at ``/mcp/bundles/{id}``, its
tools named ``<slug>__<tool>``. The store (Redis), and the adapter: the Streamable HTTP framing
(streamable.py) with the bundle answering each request itself — listing every member's tools, and
calling a member's tool through the pipeline as the gateway's own call (``Pipeline.call_tool``)."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

import orjson

from wemcp.common.bodylimit import BodyTooLarge, Disconnected
from wemcp.common.errors import BadRequest, Forbidden
from wemcp.common.identity import Identity
from wemcp.common.logging import get_logger
from wemcp.gateway.context import CallContext
from wemcp.gateway.rpc import (
    Refused,
    discover_result,
    empty_list,
    refuse,
    respond_problem,
    result_for,
    rpc_error,
)
from wemcp.gateway.upstream import UpstreamError

if TYPE_CHECKING:
    from wemcp.gateway.mcp import McpRouter

log = get_logger("wemcp.gateway.mcp")
SEP = "__"
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def scope_refusal(grant: Any, servers: list[str]) -> str | None:
    """Why a server-scoped platform API key (``ApiKeyGrant``) may not call these servers; None when
    it may (an unscoped key, a token, or every server in its scope)."""
    outside = [] if grant is None or grant.servers is None else [s for s in servers if not grant.allows(s)]
    return f"this API key is not allowed to call {', '.join(map(repr, outside))}" if outside else None


class Bundles:
    """A user's chosen set of servers, served as one MCP server. Stored in Redis
    (``gateway:bundle:<id>``); the gateway keeps a short in-memory cache."""

    def __init__(self, redis: Any, ttl: float = 30.0) -> None:
        self.redis = redis
        self.ttl = ttl
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    async def create(self, owner: Identity, servers: list[str], name: str = "", grant: Any = None) -> dict[str, Any]:
        if not servers or len(servers) > 50 or len(set(servers)) != len(servers):
            raise BadRequest("give 1 to 50 distinct server slugs")
        bad = [s for s in servers if not _SLUG.match(s) or "__" in s]
        if bad:
            raise BadRequest(f"invalid server slugs: {bad[:5]}")
        refused = scope_refusal(grant, servers)
        if refused:
            raise Forbidden(refused)
        bid = secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")
        doc = {"id": bid, "owner": str(owner.user_id), "servers": servers, "name": name[:100]}
        await self.redis.set(f"gateway:bundle:{bid}", orjson.dumps(doc))
        return doc

    async def get(self, bid: str) -> dict[str, Any] | None:
        hit = self._cache.get(bid)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        doc = None
        if re.fullmatch(r"[A-Za-z0-9]{1,40}", bid):
            raw = await self.redis.get(f"gateway:bundle:{bid}")
            doc = json.loads(raw) if raw else None
        self._cache[bid] = (now + self.ttl, doc)
        return doc

    async def check(self, target: str, ident: Identity | None, grant: Any = None) -> None:
        doc = await self.get(target.split(":", 1)[1])
        if doc is None:
            raise Refused(404, "Not Found", "no such bundle")
        if ident is None or str(ident.user_id) != doc["owner"]:
            raise Refused(403, "Forbidden", "this bundle belongs to another user")
        # checked on every use too: the bundle may predate the key, or have been made with another one
        refused = scope_refusal(grant, doc["servers"])
        if refused:
            raise Refused(403, "Forbidden", refused)

    async def servers(self, bid: str) -> list[str]:
        doc = await self.get(bid)
        return list(doc["servers"]) if doc else []


def split_tool(name: str, slugs: list[str]) -> tuple[str, str] | None:
    """(member slug, its tool) of a bundle's tool name ``<slug>__<tool>``; None when it names no member."""
    slug, sep, tool = name.partition(SEP)
    return (slug, tool) if sep and slug in slugs else None


class BundleEndpoint:
    def __init__(self, router: McpRouter) -> None:
        self.router = router
        self.pipeline = router.pipeline

    async def endpoint(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        bid = scope["path_params"]["bid"]
        try:
            await self.router.streamable_http.handle(scope, receive, send, f"bundle:{bid}", bundle=self.answer)
        except Refused as r:
            await refuse(send, r)
        except BodyTooLarge:
            await respond_problem(send, 413, "Payload Too Large", "the body is too large")
        except TimeoutError:
            await respond_problem(send, 408, "Request Timeout", "the body arrived too slowly")
        except Disconnected:
            return

    async def answer(self, ctx: CallContext) -> bytes:
        """One request to the bundle, answered by the gateway."""
        req_id, method, params, modern = ctx.req_id, ctx.method, ctx.params, ctx.client_modern
        pipeline = self.pipeline
        slugs = await self.router.gw.bundles.servers(ctx.target.split(":", 1)[1])
        if method == "ping":
            return result_for(req_id, method, {}, modern)
        if method == "server/discover":
            return discover_result(req_id, await pipeline.server_info(ctx))
        if method == "tools/list":
            async def one(slug: str) -> list[dict[str, Any]]:
                try:
                    tools = await pipeline.list_tools(pipeline.member(ctx, slug, "tools/list"))
                except (Refused, UpstreamError) as exc:
                    log.info("bundle_member_skipped", server=slug, error=str(exc)[:200])
                    return []
                return [{**t, "name": f"{slug}{SEP}{t['name']}"} for t in tools]
            lists = await asyncio.gather(*(one(s) for s in slugs))
            return result_for(req_id, method, {"tools": [t for lst in lists for t in lst]}, modern)
        if method == "tools/call":
            name = str(params.get("name") or "")
            member = split_tool(name, slugs)
            if member is None:
                return rpc_error(req_id, -32602, f"Unknown tool: {name}")
            try:
                sub = pipeline.member(ctx, member[0], "tools/call", member[1])
            except Refused as r:
                return rpc_error(req_id, -32000, r.detail)
            reply = await pipeline.call_tool(sub, params.get("arguments") or {})
            if "error" in reply:
                return orjson.dumps({"jsonrpc": "2.0", "id": req_id, "error": reply["error"]})
            return result_for(req_id, method, reply["result"], modern)
        return empty_list(req_id, method, modern) or rpc_error(req_id, -32601, f"Method not found: {method}")
