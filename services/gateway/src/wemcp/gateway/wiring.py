"""Wiring of the MCP router into the gateway's runtime: the parts, their start and stop, the raw ASGI
routes (ahead of FastAPI's own), and the bundle store.

``open_mcp`` runs after ``main._open`` (it reads ``deps.GatewayState.verifier`` at call time, so a verifier
set or replaced later — the auth wiring, a test — is honoured).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from fastapi import FastAPI
from starlette.routing import Route as StarletteRoute
from starlette.types import Receive, Scope, Send

from wemcp.common.errors import ConfigError, Forbidden, NotFound
from wemcp.common.identity import Identity
from wemcp.common.logging import get_logger
from wemcp.gateway.bundles import Bundles, scope_refusal
from wemcp.gateway.calls import CallRecorder
from wemcp.gateway.config import Settings
from wemcp.gateway.context import QuotaPort
from wemcp.gateway.keys import KeyResolver
from wemcp.gateway.mcp import McpRouter
from wemcp.gateway.openapi import OpenApiTools
from wemcp.gateway.pathguard import PathGuard
from wemcp.gateway.replicas import ReplicaRouter
from wemcp.gateway.routes import RouteTable
from wemcp.gateway.rpc import problem, respond
from wemcp.gateway.spool import Spool, SpoolBusy
from wemcp.gateway.upstream import Upstream

if TYPE_CHECKING:
    from starlette.requests import Request

    from wemcp.gateway.deps import GatewayState

log = get_logger("wemcp.gateway.wiring")


def refuse_server_scoped(request: Any) -> None:
    """A key scoped to some servers is for calling those servers (over /mcp, or their tools under
    /api/v1/servers/{slug}/tools). Anywhere else it would reach past its scope: an agent run calls
    any server, and a new unscoped key could be made with it."""
    grant = getattr(request.state, "api_key", None)
    if grant is not None and grant.servers is not None:
        raise Forbidden("this API key is limited to the servers "
                        f"{', '.join(map(repr, grant.servers))}; use it at /mcp/<server> only")


@dataclass
class Mcp:
    """Everything the MCP router needs (its runtime, typed); ``runtime.extras["mcp"]``."""

    state: GatewayState
    routes: RouteTable
    keys: KeyResolver
    upstream: Upstream
    openapi: OpenApiTools
    recorder: CallRecorder
    bundles: Bundles
    quota: QuotaPort | None = None
    router: McpRouter = field(init=False)

    def __post_init__(self) -> None:
        self.router = McpRouter(self)

    @property
    def settings(self) -> Settings:
        return self.state.settings

    @property
    def verifier(self) -> Callable[[Request], Awaitable[Identity | None]] | None:
        return self.state.verifier


def _system_keys(settings: Any) -> dict[str, dict[str, str]]:
    raw = settings.system_keys.get_secret_value() if settings.system_keys else ""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        return {str(k): {str(n): str(v) for n, v in vals.items()} for k, vals in data.items()}
    except (ValueError, AttributeError):
        raise ValueError("WEMCP_GATEWAY_SYSTEM_KEYS must be JSON: {\"slug\": {\"NAME\": \"value\"}}") from None


def _recorder(s: Any) -> CallRecorder:
    spool = None
    if s.spool_dir is not None:
        spool = Spool(s.spool_dir, s.spool_max_bytes)
        try:
            spool.open()
        except SpoolBusy as exc:
            raise ConfigError(f"WEMCP_GATEWAY_SPOOL_DIR: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"WEMCP_GATEWAY_SPOOL_DIR: cannot use {s.spool_dir}: {exc}") from None
    return CallRecorder(spool, capacity=s.call_event_queue, linger=s.call_event_linger_seconds,
                        spool_linger=s.spool_linger_seconds, max_calls=s.call_event_batch_calls,
                        max_bytes=s.call_event_batch_bytes, ack_timeout=s.call_event_ack_timeout_seconds,
                        drain_seconds=s.call_event_drain_seconds)


async def open_mcp(runtime: Any) -> None:
    state = runtime.extras["gateway"]
    s = state.settings
    upstream = Upstream(signer=runtime.issuer, max_connections=s.upstream_max_connections,
                        timeout=s.mcp_upstream_timeout_seconds, connect_timeout=s.upstream_connect_timeout_seconds,
                        egress=s.egress)
    await upstream.start()
    keys = KeyResolver(upstream.http, state.urls["auth"], signer=runtime.issuer, system_keys=_system_keys(s),
                       ttl=s.key_cache_ttl_seconds,
                       system_from_vault=s.system_keys_from_vault)
    tools = OpenApiTools(s.egress)  # the same policy object: one allow-list for every user-supplied URL
    await tools.start()
    quota = None
    if s.quota_enabled and runtime.redis is not None:
        from wemcp.quota.client import open_quota_client
        from wemcp.quota.config import QuotaSettings

        quota = await open_quota_client(runtime.redis, QuotaSettings(
            database_url=s.database_url, nats_url=s.nats_url, redis_url=s.redis_url))
    mcp = Mcp(state, RouteTable(), keys, upstream, tools, _recorder(s), Bundles(runtime.redis), quota)
    mcp.routes.listeners.append(mcp.router.on_route_change)
    runtime.extras["mcp"] = mcp
    if runtime.broker is not None:
        nc = runtime.broker.connection
        await mcp.routes.start(nc, wait_seconds=s.route_replay_wait_seconds)
        await keys.subscribe(nc)
        await mcp.recorder.start(nc)
    mcp.router.start()


async def close_mcp(runtime: Any) -> None:
    mcp: Mcp | None = runtime.extras.get("mcp")
    if mcp is None:
        return
    await mcp.router.stop()
    await mcp.recorder.stop()
    if mcp.recorder.spool is not None:
        mcp.recorder.spool.close()
    await mcp.routes.stop()
    await mcp.keys.close()
    if mcp.quota is not None:
        await mcp.quota.aclose()
    await mcp.openapi.close()
    await mcp.upstream.close()


class _Endpoint:
    """A raw ASGI endpoint bound lazily to the running router (routes are built before start)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        mcp: Mcp = scope["app"].state.runtime.extras["mcp"]
        await getattr(mcp.router, self.name)(scope, receive, send)


class _Agents:
    """``/mcp/agents/{id}``: served by the agents service; the gateway only forwards."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from starlette.requests import Request

        from wemcp.common.errors import AppError
        from wemcp.gateway.proxy import forward

        runtime = scope["app"].state.runtime
        gw = runtime.extras["gateway"]
        request = Request(scope, receive)
        try:
            ident = await gw.verifier(request) if gw.verifier is not None else None
            refuse_server_scoped(request)  # an agent's tool loop calls servers of its own choosing
            response = await forward(request, gw.client, "agents", gw.urls["agents"], gw.settings.max_body_bytes,
                                     ident)
        except AppError as exc:
            from wemcp.common.http import problem

            response = problem(exc.status, exc.title, exc.detail, headers=exc.headers)
        await response(scope, receive, send)


class _Guarded:
    """What the framework's error middleware does for an exception nobody caught: log it and answer
    500 problem+json (when nothing was sent yet)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("unhandled_error", path=scope.get("path"), method=scope.get("method"))
            if not started:
                await respond(send, 500, problem(500, "Internal Server Error",
                                                 "an unexpected error occurred; it has been logged"),
                              b"application/problem+json")


class McpFastPath:
    """``/mcp/{slug}`` and ``/mcp/{slug}/`` (GET, POST, DELETE) go straight to the MCP router, inside
    the app's own middlewares (request id, access log, tracing: the same classes and settings as
    every other path) but not through the framework's layers that serve FastAPI routes (dependency
    and exception-handler plumbing, body-limit and telemetry wrappers, matching against every API
    route) — those were a third of the gateway's CPU per call. Everything else, including other
    methods on these paths, takes the full stack unchanged."""

    def __init__(self, app: FastAPI, full: Any) -> None:
        self.app, self.full = app, full
        fast: Any = _Guarded(_Endpoint("streamable"))
        for cls, args, kwargs in reversed(app.user_middleware):  # as Starlette builds its stack
            fast = cls(fast, *args, **kwargs)
        self.fast = fast

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in _FAST_METHODS and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith("/mcp/"):
                slug = path[5:-1] if path.endswith("/") else path[5:]
                if slug and "/" not in slug:  # Starlette's {slug}: [^/]+
                    scope["app"] = self.app
                    scope["path_params"] = {"slug": slug}
                    await self.fast(scope, receive, send)
                    return
        await self.full(scope, receive, send)


_FAST_METHODS = frozenset({"GET", "POST", "DELETE"})


def install_mcp_routes(app: FastAPI) -> None:
    """The MCP paths as raw ASGI routes, first in the table: no FastAPI dependency solving on the hot
    path, and both ``/mcp/{slug}`` and ``/mcp/{slug}/`` match (no redirect). The busiest of them,
    ``/mcp/{slug}``, also gets a fast path around the framework's layers (:class:`McpFastPath`).
    Every path, fast or not, is checked by :class:`~wemcp.gateway.pathguard.PathGuard` first."""
    # Innermost of the app's own middlewares (the runtime adds request id and tracing after this), so
    # a refused path still gets a request id and an access line, on the fast path and everywhere else.
    app.add_middleware(PathGuard)
    build = app.build_middleware_stack
    # outermost: a request of a session another replica owns goes there before anything else (replicas.py)
    app.build_middleware_stack = lambda: ReplicaRouter(app, McpFastPath(app, build()))  # type: ignore[method-assign]
    # FastAPI's native request telemetry (on whenever a tracer provider is installed) duplicates what
    # the runtime's TracingMiddleware records on every path (the server span, http.server.duration):
    # two spans per request, ~5 % of the gateway's CPU per call. The gateway keeps the runtime's.
    telemetry = getattr(app, "_telemetry", None)
    if isinstance(telemetry, dict):
        telemetry.update(tracing=False, metrics=False, logs=False)
    methods = ["GET", "POST", "DELETE"]
    routes = [
        StarletteRoute("/mcp/agents/{agent_id}", _Agents(), methods=methods),
        StarletteRoute("/mcp/agents/{agent_id}/", _Agents(), methods=methods),
        StarletteRoute("/mcp/bundles/{bid}", _Endpoint("bundle"), methods=methods),
        StarletteRoute("/mcp/bundles/{bid}/", _Endpoint("bundle"), methods=methods),
        StarletteRoute("/mcp/{slug}", _Endpoint("streamable"), methods=methods),
        StarletteRoute("/mcp/{slug}/", _Endpoint("streamable"), methods=methods),
        StarletteRoute("/mcp/{slug}/sse", _Endpoint("sse"), methods=["GET"]),
        StarletteRoute("/mcp/{slug}/messages", _Endpoint("sse_messages"), methods=["POST"]),
        StarletteRoute("/mcp/{slug}/messages/", _Endpoint("sse_messages"), methods=["POST"]),
    ]
    app.router.routes[0:0] = routes


def user_of(ident: Identity | None) -> UUID | None:
    return ident.user_id if ident is not None else None


__all__ = ["Bundles", "Forbidden", "Mcp", "NotFound", "close_mcp", "install_mcp_routes", "open_mcp", "scope_refusal"]
