"""The gateway's call path, written once: identify → route → resolve keys → decide quota → forward →
record, over a :class:`~wemcp.gateway.context.CallContext`.

Every way in uses these steps: the Streamable HTTP endpoint (streamable.py), the legacy SSE
transport (legacy_sse.py), bundles (bundles.py), the REST try-it-out route (rest.py, through
:meth:`Pipeline.call_tool`) and the relay (relay.py, which records through the context it is given).
The transports only parse their framing and render what the pipeline answers.

=================  ===============================================================================
step               what decides it
=================  ===============================================================================
identify           ``check_origin`` (Origin/Host), ``identify`` (health-probe credential, then auth's
                   verifier: JWT / ``wmk_`` API key / ``?key=``; anonymous per settings)
route              ``route_for``: the route table (404 unknown/local, 403 disabled or out of the key's
                   scope, 503 not deployed yet)
resolve keys       ``resolve``: ``KeyResolver`` (request > vault > OAuth > system > default)
decide quota       ``admit`` (tools/call only): missing required keys → -32602; else the quota decision,
                   awaited, or under way alongside the call (``decide_ahead``) when the caller is far
                   from the limit
forward            ``Pipeline.call`` → forward.py (bytes to the upstream, its reply streamed back, era
                   translation) or relay.py (calls during which the server may ask the client)
record             ``record``: one ``CallRecord`` per tools/call, from the context
=================  ===============================================================================
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from uuid import UUID

import orjson
from starlette.requests import Request

from wemcp.common.clientaddr import bucket
from wemcp.common.errors import AppError
from wemcp.common.identity import Identity
from wemcp.common.trust import HEADER_ASSERTION_RAW, InvalidAssertion, Verifier
from wemcp.gateway.calls import CallRecord
from wemcp.gateway.context import CallContext
from wemcp.gateway.forward import Forwarder
from wemcp.gateway.keys import Resolved
from wemcp.gateway.relay import RELAYED, Channel, Relay
from wemcp.gateway.routes import Route
from wemcp.gateway.rpc import (
    HeadersView,
    Refused,
    discover_result,
    empty_list,
    error_fields,
    hdrs,
    header,
    host_allowed,
    respond,
    result_for,
    rpc_error,
)
from wemcp.gateway.upstream import LEGACY_VERSION, SERVER_INFO_META, UpstreamError

if TYPE_CHECKING:
    from wemcp.gateway.wiring import Mcp

# Health probes (the crawler, docs/services/crawler.md): a request carrying the platform's service
# assertion for the gateway, issued by the crawler and speaking for no user, is a probe. It may open
# sessions and list (initialize, tools/list ...) but never call a tool, so it is never metered,
# never counted and never in the request logs. Any other assertion here is a 401.
PROBE_ISSUER = "crawler"
PROBE_STATE = "wemcp_probe"
PROBE_USER_KEY = "probe"
# what a probe may not do: anything that would run a tool or read data as a use of the server
PROBE_REFUSED = frozenset({"tools/call", "prompts/get", "resources/read", "sampling/createMessage"})


def is_probe(scope: dict[str, Any]) -> bool:
    return bool(scope.get("state", {}).get(PROBE_STATE))


def user_key_of(ident: Identity | None, probe: bool = False) -> str:
    """Whose pooled upstream sessions a caller uses: the user's, the anonymous callers', the probes'."""
    return PROBE_USER_KEY if probe else str(ident.user_id) if ident is not None else "anon"


def metered(resolved: Resolved | None, decision: Any) -> bool:
    """Whether a call counts as metered in its event: what the decision said when one was made, else
    whether the caller's own keys did not cover the server."""
    if decision is not None:
        return bool(decision.counted)
    return not (resolved is not None and resolved.own_key)


def may_decide_ahead(ctx: CallContext) -> bool:
    """Whether the quota decision of this tools/call may run alongside the upstream call: the plain
    forward, or a 2025 session's call to a 2026-07-28 upstream answered on this POST (relay.py drives
    it: one reply, one decision). Not an OpenAPI server's (the gateway answers it itself), not a
    call whose reply goes to a legacy SSE stream or through a parked 2026 call."""
    route = ctx.route
    assert route is not None
    if route.kind == "openapi":
        return False
    sess = ctx.session
    return not ctx.relayed or (sess is not None and sess.queue is None and route.modern is True)


def relays(ctx: CallContext) -> bool:
    """Whether the server may ask the client something during this call (relay.py): a 2025 session,
    or a 2026-07-28 client of an upstream that is not known to speak 2026-07-28."""
    route = ctx.route
    assert route is not None
    return ctx.method in RELAYED and (ctx.session is not None or (ctx.client_modern and route.modern is not True))


class Pipeline:
    """The steps of the call path, over the gateway's runtime (``wiring.Mcp``)."""

    def __init__(self, gw: Mcp, relay: Relay) -> None:
        self.gw = gw
        self.relay = relay
        self._probe_verifier: Verifier | None = None
        # requests of 2025 client sessions in flight on pooled upstream sessions: (client session, its
        # request id) -> (upstream session, the id it carries there), for notifications/cancelled
        self.inflight: dict[tuple[str, Any], tuple[Any, int]] = {}
        self.forwarder = Forwarder(self)

    # -- identify ---------------------------------------------------------------------------------------
    def check_origin(self, scope: dict[str, Any]) -> None:
        """The spec's Origin rule (and the Host allow-list where configured): a web page of another
        origin must not call hosted tools with the visitor's network position (DNS rebinding)."""
        settings = self.gw.settings
        origin = host = None
        for k, v in scope["headers"]:
            if k == b"origin":
                origin = v.decode("latin-1")
            elif k == b"host":
                host = v.decode("latin-1")
        if settings.mcp_allowed_hosts and (host is None or not host_allowed(host, settings.mcp_allowed_hosts)):
            raise Refused(403, "Forbidden", "this Host is not one the MCP endpoint answers to")
        if origin is None or origin in settings.mcp_allowed_origins or "*" in settings.mcp_allowed_origins:
            return
        parsed = urlsplit(origin)
        if host is not None and parsed.netloc.lower() == host.lower() and \
                (not settings.mcp_allowed_hosts or host_allowed(parsed.netloc, settings.mcp_allowed_hosts)):
            return  # the page is served by this very origin
        raise Refused(403, "Forbidden", f"the Origin {origin[:200]!r} may not call MCP endpoints here "
                                        "(see MCP_ALLOWED_ORIGINS)")

    def probe_credential(self, scope: dict[str, Any]) -> bool:
        """Whether this request is the crawler's health probe: its service assertion verified (401
        when one is sent and does not verify, or is not the crawler's probe credential)."""
        token = header(scope, HEADER_ASSERTION_RAW)
        if token is None:
            return False
        verifier = self._probe_verifier
        if verifier is None:
            verifier = self._probe_verifier = Verifier(self.gw.settings.key_ring, "gateway")
        try:
            verified = verifier.verify(token)
        except InvalidAssertion as exc:
            raise Refused(401, "Unauthorized", exc.detail) from None
        if verified.issuer != PROBE_ISSUER or verified.identity is not None:
            raise Refused(401, "Unauthorized", "only the crawler's health probes present a service credential here")
        scope.setdefault("state", {})[PROBE_STATE] = True
        return True

    async def identify(self, scope: dict[str, Any], *, allow_probe: bool = False) -> tuple[Identity | None, Any]:
        """``allow_probe``: only the Streamable HTTP endpoint of one server takes health probes."""
        if self.probe_credential(scope):
            if not allow_probe:
                raise Refused(403, "Forbidden", "health probes use the server's Streamable HTTP endpoint only")
            return None, None
        verifier = self.gw.verifier
        if verifier is None:
            return None, None
        request = Request(scope)
        try:
            ident = await verifier(request)
        except AppError as exc:
            raise Refused(exc.status, exc.title, exc.detail, exc.headers) from None
        grant = scope.get("state", {}).get("api_key")
        if ident is None and not self.gw.settings.anonymous_allowed:
            url = self.gw.settings.free_key_url
            raise Refused(401, "Unauthorized", "anonymous MCP calls are off: sign in and create a free API key "
                          f"({url}), then send Authorization: Bearer <key> (or ?key=)",
                          {"WWW-Authenticate": f'Bearer realm="wemcp", error_description="sign in and create '
                                               f'a free API key at {url}", key_uri="{url}"'})
        return ident, grant

    async def enter(self, scope: dict[str, Any], target: str, *, allow_probe: bool = False) -> CallContext:
        """Identify the caller of ``target``: the context every later step fills in."""
        ident, grant = await self.identify(scope, allow_probe=allow_probe)
        return CallContext(scope, target, ident, user_key_of(ident, is_probe(scope)), grant)

    def quota_user(self, ident: Identity | None, scope: dict[str, Any]) -> UUID | str:
        """Whose counter a call moves: the user's; for an anonymous caller, their client address (the
        /64 of an IPv6 one), so one anonymous caller cannot spend every anonymous caller's free calls."""
        if ident is not None:
            return ident.user_id
        return "anon:" + bucket(self.gw.settings.client_addresses.of(scope))

    # -- route ------------------------------------------------------------------------------------------
    def route_for(self, slug: str, grant: Any) -> Route:
        route = self.gw.routes.get(slug)
        if route is None:
            raise Refused(404, "Not Found", f"no server {slug!r}")
        if not route.enabled:
            raise Refused(403, "Forbidden", f"the server {slug!r} is disabled")
        if route.kind == "local":  # "transport": "stdio-local": listed here, run by its users
            raise Refused(404, "Not Found", f"the server {slug!r} runs on its users' machines, not on the "
                          "platform: run it with the config on its page (connect.config)")
        if not route.routable:
            raise Refused(503, "Service Unavailable", f"the server {slug!r} is not deployed yet",
                          {"Retry-After": "5"})
        if grant is not None and not grant.allows(slug):
            raise Refused(403, "Forbidden", f"this API key is not allowed to call {slug!r}")
        return route

    # -- resolve keys -----------------------------------------------------------------------------------
    async def resolve(self, ctx: CallContext) -> Resolved:
        assert ctx.route is not None
        ident = ctx.identity
        resolved = ctx.resolved = await self.gw.keys.resolve(ctx.route, ident.user_id if ident else None,
                                                             HeadersView(ctx.scope))
        return resolved

    # -- decide quota -----------------------------------------------------------------------------------
    def decide_ahead(self, ctx: CallContext) -> asyncio.Future[Any] | None:
        """The quota decision under way alongside the call, when the caller is far from the limit
        (``QuotaClient.decide_ahead``); None: ``await decide(...)`` before forwarding."""
        quota = self.gw.quota
        if quota is None:
            return None
        assert ctx.resolved is not None
        return quota.decide_ahead(self.quota_user(ctx.identity, ctx.scope), "server", ctx.slug, ctx.resolved.source,
                                  in_agent_run_token=header(ctx.scope, b"x-wemcp-agent-run"))

    async def decide(self, ctx: CallContext) -> Any:
        """The quota decision for a tools/call (None when no quota client is wired)."""
        quota = self.gw.quota
        if quota is None:
            return None
        assert ctx.resolved is not None
        return await quota.decide(self.quota_user(ctx.identity, ctx.scope), "server", ctx.slug, ctx.resolved.source,
                                  in_agent_run_token=header(ctx.scope, b"x-wemcp-agent-run"))

    async def admit(self, ctx: CallContext, *, may_defer: bool) -> bytes | None:
        """The gate of a tools/call: required keys nobody supplied, then the quota. Returns the
        JSON-RPC error body of a refusal (recorded; HTTP 429 when the quota refused, in
        ``ctx.decision``), None when the call goes on — with ``ctx.decision`` (its headers added to
        ``ctx.extra``) or, when ``may_defer``, possibly ``ctx.ahead`` instead."""
        resolved = ctx.resolved
        assert resolved is not None
        if resolved.missing:
            body = rpc_error(ctx.req_id, -32602, f"{ctx.slug} needs {', '.join(resolved.missing)}: send "
                             f"X-WeMcp-Env-<NAME> headers or save your key in the vault",
                             {"missing": list(resolved.missing)})
            self.record(ctx, "error", -32602, len(body))
            return body
        if may_defer:
            ctx.ahead = self.decide_ahead(ctx)
        if ctx.ahead is None:
            decision = ctx.decision = await self.decide(ctx)
            if decision is not None:
                ctx.extra = ctx.extra + hdrs(decision.headers())
                if not decision.allowed:
                    err = decision.jsonrpc_error()
                    body = rpc_error(ctx.req_id, **error_fields(err))
                    self.record(ctx, "refused", err["code"], len(body))
                    return body
        return None

    # -- record -----------------------------------------------------------------------------------------
    def record(self, ctx: CallContext, status: str, code: int | None, nout: int) -> None:
        """The call event of ``ctx`` (``mcp.call.batch``, calls.py)."""
        ident, resolved, decision = ctx.identity, ctx.resolved, ctx.decision
        self.gw.recorder.record(CallRecord(
            user_id=ident.user_id if ident is not None else None, server_slug=ctx.slug, method=ctx.method,
            tool=ctx.tool, key_source=resolved.source if resolved is not None else "none",
            metered=metered(resolved, decision),
            in_agent_run=bool(decision is not None and decision.reason == "agent_run"),
            status=status, error_code=code, latency_ms=(time.perf_counter() - ctx.t0) * 1000,
            request_bytes=len(ctx.raw), response_bytes=nout))

    # -- one request, after identify and route ------------------------------------------------------------
    async def call(self, ctx: CallContext, send: Any) -> None:
        """Answer one JSON-RPC request of a server's client on ``send`` (an ASGI send; the legacy SSE
        transport collects it): resolve keys, decide quota (tools/call), forward, record."""
        route = ctx.route
        assert route is not None
        method, modern = ctx.method, ctx.client_modern
        if method == "ping":
            await respond(send, 200, result_for(ctx.req_id, method, {}, modern), headers=ctx.extra)
            return
        await self.resolve(ctx)
        if modern and method == "server/discover":
            await respond(send, 200, await self.discover(ctx), headers=ctx.extra)
            return
        if modern and method in RELAYED and (state := self.relay.resumable(ctx.msg)) is not None:
            # a retry answering the question of a parked call (relay.py): counted once, at its start
            await self.relay.resume(Channel(send, ctx.extra), state, ctx)
            return
        ctx.relayed = relays(ctx)
        if method == "tools/call":
            refused = await self.admit(ctx, may_defer=may_decide_ahead(ctx))
            if refused is not None:
                # HTTP 429 for proxies and plain HTTP clients; the JSON-RPC error in the body is what
                # MCP clients surface (the spec lets a non-2xx carry the error)
                await respond(send, 200 if ctx.decision is None else 429, refused, headers=ctx.extra)
                return
        if route.kind == "openapi":
            body = await self.openapi_rpc(ctx)
            if ctx.tool is not None:
                self.record(ctx, "error" if b'"error"' in body[:64] else "ok", None, len(body))
            await respond(send, 200, body, headers=ctx.extra)
            return
        sess = ctx.session
        if sess is None:
            await self.forwarder.forward(ctx, send, None)
            return
        key = (sess.sid, ctx.req_id)  # where the request goes upstream, for the client's notifications/cancelled

        def on_sent(upstream: Any, uid: int) -> None:
            self.inflight[key] = (upstream, uid)
        try:
            await self.forwarder.forward(ctx, send, on_sent)
        finally:
            self.inflight.pop(key, None)

    async def discover(self, ctx: CallContext) -> bytes:
        try:
            info = await self.server_info(ctx, client_modern=True)
        except UpstreamError as exc:
            return rpc_error(ctx.req_id, exc.code, f"upstream: {exc}")
        return discover_result(ctx.req_id, info)

    async def openapi_rpc(self, ctx: CallContext) -> bytes:
        """An OpenAPI server's MCP methods, answered by the gateway itself (openapi.py)."""
        req_id, method, params, modern = ctx.req_id, ctx.method, ctx.params, ctx.client_modern
        route, resolved = ctx.route, ctx.resolved
        assert route is not None and resolved is not None
        tools = self.gw.openapi
        if method == "tools/list":
            return result_for(req_id, method, {"tools": tools.tools(route)}, modern)
        if method == "tools/call":
            try:
                return result_for(req_id, method, await tools.call(route, resolved, str(params.get("name")),
                                                                    params.get("arguments") or {}), modern)
            except KeyError:
                return rpc_error(req_id, -32602, f"Unknown tool: {params.get('name')}")
        return empty_list(req_id, method, modern) or rpc_error(req_id, -32601, f"Method not found: {method}")

    async def server_info(self, ctx: CallContext, version: str = LEGACY_VERSION,
                          caps: dict[str, Any] | None = None, client_modern: bool = False) -> dict[str, Any]:
        """capabilities / serverInfo / instructions of a target, for initialize (a 2025 client) and
        server/discover (``client_modern``). The server's own ``serverInfo``, never the gateway's."""
        route = ctx.route
        if route is None:  # a bundle
            return {"capabilities": {"tools": {"listChanged": False}},
                    "serverInfo": {"name": f"wemcp-bundle-{ctx.target.split(':', 1)[1]}", "version": "1"}}
        if route.kind == "openapi":
            return {"capabilities": {"tools": {"listChanged": False}},
                    "serverInfo": {"name": route.slug, "version": "openapi"}}
        up = self.gw.upstream
        resolved = await self.resolve(ctx)
        if await up.modern_for(route, resolved, client_modern):
            d = await up.discover(route, resolved)
            meta = d.get("_meta") or {}
            return {"capabilities": d.get("capabilities") or {},
                    "serverInfo": meta.get(SERVER_INFO_META) or {"name": route.slug, "version": ""},
                    "instructions": d.get("instructions")}
        sess = await up.legacy_session(route, resolved, ctx.user_key, version, caps=caps)
        r = sess.init_result
        return {"capabilities": r.get("capabilities") or {}, "serverInfo": r.get("serverInfo") or {},
                "instructions": r.get("instructions")}

    # -- the gateway as a client (REST try-it-out, bundles) ----------------------------------------------------
    def member(self, ctx: CallContext, slug: str, method: str = "tools/call", tool: str | None = None) -> CallContext:
        """A context for a call the gateway makes itself on behalf of ``ctx``'s caller (a bundle's
        member server, REST): same caller, its own route and timing."""
        sub = CallContext(ctx.scope, slug, ctx.identity, ctx.user_key, ctx.grant, method=method, tool=tool)
        sub.route = self.route_for(slug, None)
        return sub

    async def list_tools(self, ctx: CallContext) -> list[dict[str, Any]]:
        route = ctx.route
        assert route is not None
        resolved = await self.resolve(ctx)
        if route.kind == "openapi":
            return self.gw.openapi.tools(route)
        reply = await self.gw.upstream.call(route, resolved, ctx.user_key, "tools/list", {})
        if "error" in reply:
            raise UpstreamError(str(reply["error"].get("message")), int(reply["error"].get("code", -32603)))
        return list(reply["result"].get("tools") or [])

    async def call_tool(self, ctx: CallContext, arguments: dict[str, Any]) -> dict[str, Any]:
        """One tools/call made by the gateway (REST try-it-out, bundles): key, quota, event; returns
        the JSON-RPC reply ({"result"} or {"error"}); the decision, when one was made, is in
        ``ctx.decision``."""
        route, tool = ctx.route, ctx.tool
        assert route is not None and tool is not None
        ctx.method, ctx.t0 = "tools/call", time.perf_counter()
        resolved = await self.resolve(ctx)
        if resolved.missing:
            return {"error": {"code": -32602, "message": f"{route.slug} needs {', '.join(resolved.missing)}",
                              "data": {"missing": list(resolved.missing)}}}
        decision = ctx.decision = await self.decide(ctx)
        if decision is not None and not decision.allowed:
            self.record(ctx, "refused", decision.jsonrpc_error()["code"], 0)
            return {"error": decision.jsonrpc_error()}
        try:
            if route.kind == "openapi":
                reply = {"result": await self.gw.openapi.call(route, resolved, tool, arguments)}
            else:
                reply = await self.gw.upstream.call(route, resolved, ctx.user_key, "tools/call",
                                                    {"name": tool, "arguments": arguments})
        except KeyError:
            reply = {"error": {"code": -32602, "message": f"Unknown tool: {tool}"}}
        except UpstreamError as exc:
            self.record(ctx, "timeout" if exc.timeout else "error", exc.code, 0)
            return {"error": {"code": exc.code, "message": f"upstream: {exc}"}}
        self.record(ctx, "error" if "error" in reply else "ok", reply.get("error", {}).get("code"),
                    len(orjson.dumps(reply)))
        return reply
