"""The MCP router: ``/mcp/{slug}`` (Streamable HTTP, both eras), ``/mcp/{slug}/sse`` (legacy SSE),
``/mcp/bundles/{id}`` (several servers as one, tools named ``<slug>__<tool>``).

A thin forwarder written as raw ASGI endpoints: it parses the JSON-RPC message only to read what it
must (method, id, tool name), decides identity, key, quota, then forwards the client's own bytes
when the eras match and streams the upstream's reply back unbuffered. See docs/services/gateway.md.

Clients of the 2025 revisions get a *gateway* session (``Mcp-Session-Id`` minted here, bound to the
caller and the server); it multiplexes onto pooled upstream sessions (see upstream.py), or onto
stateless 2026-07-28 requests when the upstream speaks that era. Clients of 2026-07-28 need no
session at all. A 2025 session's ``GET`` stream also carries what the upstream says outside any call
(list_changed, resources/updated of what it subscribed to), relayed from the pooled upstream
session's own ``GET`` stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import orjson
from starlette.requests import Request

from wemcp.common.bodylimit import BodyTooLarge as TooLarge
from wemcp.common.bodylimit import Disconnected, read_body
from wemcp.common.clientaddr import bucket
from wemcp.common.errors import AppError
from wemcp.common.identity import Identity
from wemcp.common.logging import get_logger
from wemcp.common.trust import HEADER_ASSERTION_RAW, InvalidAssertion, Verifier
from wemcp.gateway.calls import CallRecord
from wemcp.gateway.keys import Resolved
from wemcp.gateway.relay import RELAYED, Channel, Relay, landed
from wemcp.gateway.resume import SessionEvents, StreamLog
from wemcp.gateway.routes import MODERN, Route
from wemcp.gateway.upstream import (
    CAPS_META,
    INFO_META,
    LEGACY_VERSION,
    SERVER_INFO_META,
    UpstreamError,
    final_response,
    legacy_result,
    modernize,
    parse_messages,
)

log = get_logger("wemcp.gateway.mcp")
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
SEP = "__"
# what an upstream says outside any call that reaches 2025 sessions' GET streams
OUTSIDE_CALLS = frozenset({"notifications/resources/updated", "notifications/resources/list_changed",
                           "notifications/tools/list_changed", "notifications/prompts/list_changed"})
# Health probes (the crawler, docs/services/crawler.md): a request carrying the platform's service
# assertion for the gateway, issued by the crawler and speaking for no user, is a probe. It may open
# sessions and list (initialize, tools/list ...) but never call a tool, so it is never metered,
# never counted and never in the request logs. Any other assertion here is a 401.
PROBE_ISSUER = "crawler"
PROBE_STATE = "wemcp_probe"
PROBE_USER_KEY = "probe"
OUTSIDE_BACKLOG = 256  # messages waiting on a session's GET stream; more are dropped
JSON = b"application/json"


class Refused(Exception):
    """An HTTP-level refusal, rendered as problem+json."""

    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.headers = status, title, detail, headers or {}


@dataclass
class ClientSession:
    sid: str
    target: str  # slug, or "bundle:<id>"
    user_key: str
    identity: Identity | None
    protocol_version: str
    capabilities: dict[str, Any]
    client_info: dict[str, Any]
    queue: asyncio.Queue[bytes] | None = None  # legacy SSE transport: replies travel on the stream
    stream: asyncio.Queue[bytes] | None = None  # the open GET stream of a 2025 session
    last_used: float = field(default_factory=time.monotonic)
    events: SessionEvents = field(default_factory=SessionEvents)  # its SSE answers, for Last-Event-ID
    upstream: Any = None  # the pooled upstream session its GET stream listens to (messages outside calls)
    subscriptions: set[str] = field(default_factory=set)  # resource URIs it subscribed to


# -- small ASGI helpers -----------------------------------------------------------------------------------
async def respond(send: Any, status: int, body: bytes, ctype: bytes = JSON,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    h = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    if headers:
        h.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": h})
    await send({"type": "http.response.body", "body": body})


def params_of(msg: dict[str, Any]) -> dict[str, Any]:
    """A JSON-RPC message's params when they are an object, else a new empty dict."""
    params = msg.get("params")
    return params if isinstance(params, dict) else {}


def rpc_error(req_id: Any, code: int, message: str, data: Any = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return orjson.dumps({"jsonrpc": "2.0", "id": req_id, "error": err})


def rpc_result(req_id: Any, result: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": req_id, "result": result})


def problem(status: int, title: str, detail: str) -> bytes:
    return orjson.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})


def hdrs(d: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in d.items()]


# what a probe may not do: anything that would run a tool or read data as a use of the server
PROBE_REFUSED = frozenset({"tools/call", "prompts/get", "resources/read", "sampling/createMessage"})


def is_probe(scope: dict[str, Any]) -> bool:
    return bool(scope.get("state", {}).get(PROBE_STATE))


def header(scope: dict[str, Any], name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return None


def classify(msg: Any) -> str | None:
    """'request', 'notification', 'response' or None (not JSON-RPC 2.0)."""
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
        return None
    if isinstance(msg.get("method"), str):
        if "id" not in msg:
            return "notification"
        return "request" if isinstance(msg["id"], (str, int)) and not isinstance(msg["id"], bool) else None
    if "id" in msg and ("result" in msg or "error" in msg):
        return "response"
    return None


class McpRouter:
    def __init__(self, gw: Any) -> None:
        self.gw = gw
        self.sessions: dict[str, ClientSession] = {}
        self.sid_prefix = ""  # this replica's id + "." when several run (replicas.py): ids name their owner
        self._reaper: asyncio.Task[None] | None = None
        self.relay = Relay(gw.upstream, gw.settings.mcp_upstream_timeout_seconds)  # server → client, mid-call
        self._tasks: set[asyncio.Task[None]] = set()  # legacy SSE replies in progress
        self._listeners: dict[int, asyncio.Task[None]] = {}  # upstream sessions' GET streams
        # requests of 2025 client sessions in flight on pooled upstream sessions: (client session, its
        # request id) -> (upstream session, the id it carries there), for notifications/cancelled
        self.inflight: dict[tuple[str, Any], tuple[Any, int]] = {}

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap(), name="gateway-session-reaper")

    async def stop(self) -> None:
        for sess in list(self.sessions.values()):
            self._end(sess)  # open SSE streams end, so the server can shut down
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(BaseException):
                await self._reaper
        for task in list(self._listeners.values()):
            task.cancel()
        await self.relay.stop()

    async def _reap(self) -> None:
        idle = self.gw.settings.mcp_session_idle_seconds
        while True:
            await asyncio.sleep(min(idle / 4, 30.0))
            cutoff = time.monotonic() - idle
            for sid in [s for s, c in self.sessions.items() if c.last_used < cutoff and c.queue is None]:
                self.sessions.pop(sid, None)

    def on_route_change(self, route: Route, subject: str) -> None:
        self.gw.upstream.retire(route.slug)
        if subject == "server.disabled":
            for sid in [s for s, c in self.sessions.items() if c.target == route.slug]:
                self._end(self.sessions.pop(sid))

    @staticmethod
    def _end(sess: ClientSession) -> None:
        for q in (sess.queue, sess.stream):
            if q is not None:
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(b"")  # ends the SSE stream

    # -- shared steps ---------------------------------------------------------------------------------
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
        if settings.mcp_allowed_hosts and (host is None or not _host_allowed(host, settings.mcp_allowed_hosts)):
            raise Refused(403, "Forbidden", "this Host is not one the MCP endpoint answers to")
        if origin is None or origin in settings.mcp_allowed_origins or "*" in settings.mcp_allowed_origins:
            return
        parsed = urlsplit(origin)
        if host is not None and parsed.netloc.lower() == host.lower() and \
                (not settings.mcp_allowed_hosts or _host_allowed(parsed.netloc, settings.mcp_allowed_hosts)):
            return  # the page is served by this very origin
        raise Refused(403, "Forbidden", f"the Origin {origin[:200]!r} may not call MCP endpoints here "
                                        "(see MCP_ALLOWED_ORIGINS)")

    def probe_credential(self, scope: dict[str, Any]) -> bool:
        """Whether this request is the crawler's health probe: its service assertion verified (401
        when one is sent and does not verify, or is not the crawler's probe credential)."""
        token = header(scope, HEADER_ASSERTION_RAW)
        if token is None:
            return False
        verifier = getattr(self, "_probe_verifier", None)
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

    def quota_user(self, ident: Identity | None, scope: dict[str, Any]) -> UUID | str:
        """Whose counter a call moves: the user's; for an anonymous caller, their client address (the
        /64 of an IPv6 one), so one anonymous caller cannot spend every anonymous caller's free calls."""
        if ident is not None:
            return ident.user_id
        return "anon:" + bucket(self.gw.settings.client_addresses.of(scope))

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

    def decide_ahead(self, ident: Identity | None, slug: str, resolved: Resolved,
                     scope: dict[str, Any]) -> asyncio.Future[Any] | None:
        """The quota decision under way alongside the call, when the caller is far from the limit
        (``QuotaClient.decide_ahead``); None: ``await decide(...)`` before forwarding."""
        quota = self.gw.quota
        if quota is None:
            return None
        fut: asyncio.Future[Any] | None = quota.decide_ahead(
            self.quota_user(ident, scope), "server", slug, resolved.source,
            in_agent_run_token=header(scope, b"x-wemcp-agent-run"))
        return fut

    async def decide(self, ident: Identity | None, slug: str, resolved: Resolved,
                     scope: dict[str, Any]) -> Any:
        """The quota decision for a tools/call (None when no quota client is wired)."""
        quota = self.gw.quota
        if quota is None:
            return None
        return await quota.decide(self.quota_user(ident, scope), "server", slug, resolved.source,
                                  in_agent_run_token=header(scope, b"x-wemcp-agent-run"))

    def record(self, ident: Identity | None, slug: str, method: str, tool: str | None, resolved: Resolved | None,
               decision: Any, status: str, code: int | None, t0: float, nin: int, nout: int,
               agent_run: bool = False) -> None:
        metered = bool(decision is not None and decision.counted) if decision is not None else \
            not (resolved is not None and resolved.own_key)
        self.gw.recorder.record(CallRecord(
            user_id=ident.user_id if ident is not None else None, server_slug=slug, method=method, tool=tool,
            key_source=resolved.source if resolved is not None else "none", metered=metered,
            in_agent_run=bool(decision is not None and decision.reason == "agent_run") or agent_run,
            status=status, error_code=code, latency_ms=(time.perf_counter() - t0) * 1000,
            request_bytes=nin, response_bytes=nout))

    # -- /mcp/{slug}: Streamable HTTP ---------------------------------------------------------------------
    async def streamable(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        slug = scope["path_params"]["slug"]
        try:
            await self._streamable(scope, receive, send, slug)
        except Refused as r:
            await respond(send, r.status, problem(r.status, r.title, r.detail), b"application/problem+json",
                          hdrs(r.headers))
        except TooLarge:
            limit = self.gw.settings.mcp_max_body_bytes
            await respond(send, 413, problem(413, "Payload Too Large", f"the body is larger than {limit} bytes"),
                          b"application/problem+json", [(b"connection", b"close")])
        except TimeoutError:
            await respond(send, 408, problem(408, "Request Timeout", "the request body arrived too slowly"),
                          b"application/problem+json", [(b"connection", b"close")])
        except Disconnected:
            return

    async def _streamable(self, scope: dict[str, Any], receive: Any, send: Any, target: str,
                          bundle: bool = False) -> None:
        method = scope["method"]
        self.check_origin(scope)
        ident, grant = await self.identify(scope, allow_probe=not bundle)
        probe = is_probe(scope)
        user_key = PROBE_USER_KEY if probe else str(ident.user_id) if ident is not None else "anon"
        if method == "GET":
            sess = self._session(scope, target, user_key)
            if sess is None:
                await respond(send, 405, problem(405, "Method Not Allowed",
                                                 "GET opens a stream only inside a 2025 session"),
                              b"application/problem+json", [(b"allow", b"POST, DELETE")])
                return
            last = header(scope, b"last-event-id")
            found = sess.events.find(last) if last else None
            if found is not None:  # a client resuming a call's stream that broke (resume.py)
                await self._resume_stream(send, receive, *found)
                return
            sess.stream = asyncio.Queue(OUTSIDE_BACKLOG)
            await self._listen_upstream(sess, ident, scope)
            await self._keepalive_stream(send, receive, sess.stream)
            return
        if method == "DELETE":
            sid = header(scope, b"mcp-session-id")
            sess = self.sessions.get(sid or "")
            if sess is None or sess.user_key != user_key or sess.target != target:
                await respond(send, 404, rpc_error(None, -32600, "Session not found"))
                return
            self._end(self.sessions.pop(sess.sid))
            await respond(send, 200, b"")
            return
        if method != "POST":
            await respond(send, 405, problem(405, "Method Not Allowed", "use POST"), b"application/problem+json",
                          [(b"allow", b"GET, POST, DELETE")])
            return
        route = None if bundle else self.route_for(target, grant)
        if bundle:
            await self.gw.bundles.check(target, ident, grant)
        raw = await read_body(scope, receive, self.gw.settings.mcp_max_body_bytes,
                              self.gw.settings.mcp_body_timeout_seconds)
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await respond(send, 400, rpc_error(None, -32700, "Parse error: the body is not JSON"))
            return
        if isinstance(msg, list):
            await respond(send, 400, rpc_error(None, -32600, "Invalid Request: batches are not supported"))
            return
        kind = classify(msg)
        if kind is None:
            await respond(send, 400, rpc_error(msg.get("id") if isinstance(msg, dict) else None, -32600,
                                               "Invalid Request: not a JSON-RPC 2.0 message"))
            return
        pv = header(scope, b"mcp-protocol-version")
        client_modern = pv is not None and pv not in HANDSHAKE_VERSIONS
        if client_modern and pv != MODERN:
            await respond(send, 400, rpc_error(msg.get("id"), -32022, "Unsupported protocol version",
                                               {"supported": [MODERN], "requested": pv}))
            return
        sess = None
        extra: list[tuple[bytes, bytes]] = []
        if not client_modern:
            if kind == "request" and msg["method"] == "initialize":
                await self._initialize(send, msg, target, route, ident, user_key, scope)
                return
            sess = self._session(scope, target, user_key)
            if sess is None:
                sid = header(scope, b"mcp-session-id")
                if sid is None:
                    await respond(send, 400, rpc_error(msg.get("id"), -32600,
                                                       "Bad Request: no Mcp-Session-Id; send initialize first"))
                else:
                    await respond(send, 404, rpc_error(msg.get("id"), -32600, "Session not found"))
                return
            sess.last_used = time.monotonic()
            extra.append((b"mcp-session-id", sess.sid.encode()))
        if sess is not None and kind == "request" and msg["method"] in ("resources/subscribe", "resources/unsubscribe"):
            uri = params_of(msg).get("uri")
            if isinstance(uri, str):  # whose GET stream hears of that resource's updates
                (sess.subscriptions.add if msg["method"] == "resources/subscribe" else sess.subscriptions.discard)(uri)
        if kind == "response" and sess is not None:  # the answer to a server's request (relay.py)
            await self.relay.answer(sess.sid, msg)
        elif kind == "notification" and sess is not None and msg["method"] == "notifications/cancelled":
            await self.cancel(sess, msg)
        if kind != "request":
            await respond(send, 202, b"", headers=extra)  # notifications and replies end here
            return
        if probe and msg["method"] in PROBE_REFUSED:
            await respond(send, 200, rpc_error(msg.get("id"), -32601, "a health probe does not call tools"),
                          headers=extra)
            return
        if bundle:
            body = await self.bundle_rpc(target, ident, user_key, msg, scope, client_modern, sess)
            await respond(send, 200, body, headers=extra)
            return
        assert route is not None
        await self._forward(send, scope, route, ident, user_key, msg, raw, client_modern, sess, extra)

    async def cancel(self, sess: ClientSession, msg: dict[str, Any]) -> None:
        """A 2025 client cancelled one of its requests: the upstream session carrying it is told, under
        the id the upstream saw (the bridge passes it on to the stdio child that runs it). A request
        this session has not in flight (finished, unknown, another session's) is ignored."""
        params = params_of(msg)
        rid = params.get("requestId")
        if not isinstance(rid, (str, int)) or isinstance(rid, bool):
            return  # not a request id at all
        where = self.inflight.get((sess.sid, rid))
        if where is None:
            return
        upstream, uid = where
        note: dict[str, Any] = {"requestId": uid}
        if isinstance(params.get("reason"), str):
            note["reason"] = params["reason"][:500]
        await self.relay._post(upstream, {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": note})

    def _session(self, scope: dict[str, Any], target: str, user_key: str) -> ClientSession | None:
        sid = header(scope, b"mcp-session-id")
        if not sid:
            return None
        sess = self.sessions.get(sid)
        # A session id is bound to its caller and server: another user's id is simply unknown.
        if sess is None or sess.user_key != user_key or sess.target != target:
            return None
        return sess

    async def _initialize(self, send: Any, msg: dict[str, Any], target: str, route: Route | None,
                          ident: Identity | None, user_key: str, scope: dict[str, Any],
                          queue: asyncio.Queue[bytes] | None = None,
                          existing: ClientSession | None = None) -> ClientSession | None:
        """``existing``: the session of a legacy SSE stream, opened with the stream; its initialize
        fills in what the client negotiated (no second session)."""
        params = params_of(msg)
        asked = str(params.get("protocolVersion") or LEGACY_VERSION)
        version = asked if asked in HANDSHAKE_VERSIONS else LEGACY_VERSION
        try:
            info = await self.server_info(target, route, ident, user_key, scope, version,
                                          params.get("capabilities") if isinstance(params.get("capabilities"), dict)
                                          else None)
        except UpstreamError as exc:
            body = rpc_error(msg["id"], exc.code, f"upstream: {exc}")
            if queue is None:
                await respond(send, 200, body)
            else:
                queue.put_nowait(body)
            return None
        if existing is not None:
            sess, sid = existing, existing.sid
            sess.protocol_version = version
            sess.capabilities = dict(params.get("capabilities") or {})
            sess.client_info = dict(params.get("clientInfo") or {})
        else:
            if len(self.sessions) >= self.gw.settings.mcp_max_sessions:
                oldest = min(self.sessions.values(), key=lambda s: s.last_used)
                self.sessions.pop(oldest.sid, None)
            sid = self.sid_prefix + secrets.token_hex(16)
            sess = ClientSession(sid, target, user_key, ident, version, dict(params.get("capabilities") or {}),
                                 dict(params.get("clientInfo") or {}), queue)
            self.sessions[sid] = sess
        result = {"protocolVersion": version, "capabilities": info["capabilities"], "serverInfo": info["serverInfo"]}
        if info.get("instructions"):
            result["instructions"] = info["instructions"]
        body = rpc_result(msg["id"], result)
        if queue is None:
            await respond(send, 200, body, headers=[(b"mcp-session-id", sid.encode())])
        else:
            queue.put_nowait(body)
        return sess

    async def server_info(self, target: str, route: Route | None, ident: Identity | None, user_key: str,
                          scope: dict[str, Any], version: str = LEGACY_VERSION,
                          caps: dict[str, Any] | None = None, client_modern: bool = False) -> dict[str, Any]:
        """capabilities / serverInfo / instructions of a target, for initialize (a 2025 client) and
        server/discover (``client_modern``). The server's own ``serverInfo``, never the gateway's."""
        if route is None:  # a bundle
            return {"capabilities": {"tools": {"listChanged": False}},
                    "serverInfo": {"name": f"wemcp-bundle-{target.split(':', 1)[1]}", "version": "1"}}
        if route.kind == "openapi":
            return {"capabilities": {"tools": {"listChanged": False}},
                    "serverInfo": {"name": route.slug, "version": "openapi"}}
        up = self.gw.upstream
        resolved = await self.gw.keys.resolve(route, ident.user_id if ident else None, _Headers(scope))
        if await up.modern_for(route, resolved, client_modern):
            d = await up.discover(route, resolved)
            meta = d.get("_meta") or {}
            return {"capabilities": d.get("capabilities") or {},
                    "serverInfo": meta.get(SERVER_INFO_META) or {"name": route.slug, "version": ""},
                    "instructions": d.get("instructions")}
        sess = await up.legacy_session(route, resolved, user_key, version, caps=caps)
        r = sess.init_result
        return {"capabilities": r.get("capabilities") or {}, "serverInfo": r.get("serverInfo") or {},
                "instructions": r.get("instructions")}

    async def _forward(self, send: Any, scope: dict[str, Any], route: Route, ident: Identity | None,
                       user_key: str, msg: dict[str, Any], raw: bytes, client_modern: bool,
                       sess: ClientSession | None, extra: list[tuple[bytes, bytes]]) -> None:
        t0 = time.perf_counter()
        req_id = msg["id"]
        method = msg["method"]
        params = params_of(msg)
        tool = params.get("name") if method == "tools/call" and isinstance(params.get("name"), str) else None
        if method == "ping":
            await respond(send, 200, result_for(req_id, method, {}, client_modern), headers=extra)
            return
        resolved = await self.gw.keys.resolve(route, ident.user_id if ident else None, _Headers(scope))
        if client_modern and method == "server/discover":
            await respond(send, 200, await self._discover(route, ident, user_key, scope, req_id), headers=extra)
            return
        if client_modern and method in RELAYED and (state := self.relay.resumable(msg)) is not None:
            # a retry answering the question of a parked call (relay.py): counted once, at its start
            await self.relay.resume(Channel(send, extra), state, route, user_key, msg)
            return
        decision = None
        ahead: asyncio.Future[Any] | None = None
        # the server may ask the client something during the call (relay.py)
        relayed = method in RELAYED and (sess is not None or (client_modern and route.modern is not True))
        if method == "tools/call":
            if resolved.missing:
                body = rpc_error(req_id, -32602, f"{route.slug} needs {', '.join(resolved.missing)}: send "
                                 f"X-WeMcp-Env-<NAME> headers or save your key in the vault",
                                 {"missing": list(resolved.missing)})
                self.record(ident, route.slug, method, tool, resolved, None, "error", -32602, t0, len(raw), len(body))
                await respond(send, 200, body, headers=extra)
                return
            # may decide alongside the call: the plain path below, or a 2025 session's call to a
            # 2026-07-28 upstream answered on this POST (relay.py drives it; one reply, one decision)
            if route.kind != "openapi" and (not relayed or (sess is not None and sess.queue is None
                                                            and route.modern is True)):
                ahead = self.decide_ahead(ident, route.slug, resolved, scope)
            if ahead is None:
                decision = await self.decide(ident, route.slug, resolved, scope)
            if decision is not None:
                extra = extra + hdrs(decision.headers())
                if not decision.allowed:
                    body = rpc_error(req_id, **_err(decision.jsonrpc_error()))
                    self.record(ident, route.slug, method, tool, resolved, decision, "refused",
                                decision.jsonrpc_error()["code"], t0, len(raw), len(body))
                    # HTTP 429 for proxies and plain HTTP clients; the JSON-RPC error in the body is
                    # what MCP clients surface (the spec lets a non-2xx carry the error)
                    await respond(send, 429, body, headers=extra)
                    return
        if route.kind == "openapi":
            body = await self._openapi_rpc(route, resolved, msg, client_modern)
            if tool is not None:
                self.record(ident, route.slug, method, tool, resolved, decision,
                            "error" if b'"error"' in body[:64] else "ok", None, t0, len(raw), len(body))
            await respond(send, 200, body, headers=extra)
            return
        on_sent = None
        if sess is not None:  # where the request goes upstream, for the client's notifications/cancelled
            key = (sess.sid, req_id)

            def on_sent(upstream: Any, uid: int) -> None:
                self.inflight[key] = (upstream, uid)
        try:
            await self._call(send, scope, route, ident, user_key, msg, raw, client_modern, sess, extra, t0, method,
                             tool, resolved, decision, ahead, relayed, on_sent)
        finally:
            if on_sent is not None:
                self.inflight.pop(key, None)

    async def _call(self, send: Any, scope: dict[str, Any], route: Route, ident: Identity | None, user_key: str,
                    msg: dict[str, Any], raw: bytes, client_modern: bool, sess: ClientSession | None,
                    extra: list[tuple[bytes, bytes]], t0: float, method: str, tool: str | None, resolved: Resolved,
                    decision: Any, ahead: asyncio.Future[Any] | None, relayed: bool,
                    on_sent: Callable[[Any, int], None] | None) -> None:
        req_id = msg["id"]
        if relayed:
            def finish(status: str, code: int | None, nout: int) -> None:
                if tool is not None:
                    self.record(ident, route.slug, method, tool, resolved,
                                channel.decided if ahead is not None else decision, status, code, t0, len(raw), nout)
            channel = Channel(send, extra, sess.queue if sess is not None else None, decision=ahead, slug=route.slug,
                              events=sess.events if sess is not None and sess.queue is None else None,
                              priming=sess is not None and sess.protocol_version >= "2025-11-25")
            if await self.relay.call(channel, route, resolved, user_key, msg, raw, client_modern, sess, finish,
                                     on_sent):
                return
        up = self.gw.upstream
        try:
            resp = await up.send(route, resolved, user_key, msg, raw, client_modern=client_modern,
                                 client_caps=sess.capabilities if sess else None,
                                 client_info=sess.client_info if sess else None,
                                 legacy_version=sess.protocol_version if sess else LEGACY_VERSION,
                                 on_sent=on_sent)
        except UpstreamError as exc:
            if ahead is not None:
                decision, more = await landed(ahead, route.slug)
                extra = extra + more
            body = rpc_error(req_id, exc.code, f"upstream: {exc}")
            if tool is not None:
                self.record(ident, route.slug, method, tool, resolved, decision,
                            "timeout" if exc.timeout else "error", exc.code, t0, len(raw), len(body))
            await respond(send, 200, body, headers=extra)
            return
        if ahead is not None:
            decision, more = await landed(ahead, route.slug)
            extra = extra + more
        ctype = resp.headers.get("content-type", "application/json")
        translated = (route.modern is False) if client_modern else (route.modern is True and route.legacy is not True)
        if translated:
            # the other era's answer: a 2025 upstream's reply needs the fields a 2026-07-28 client
            # requires; a 2026-07-28-only upstream's reply loses those a 2025 client must not see
            try:
                body = await up.read(resp)
                reply = final_response(parse_messages(body, ctype), req_id)
            except Exception:
                reply = None
            if reply is None:
                body = rpc_error(req_id, -32002, "upstream: no JSON-RPC reply")
            else:
                if isinstance(reply.get("result"), dict):
                    reply["result"] = (modernize(method, reply["result"]) if client_modern
                                       else legacy_result(reply["result"]))
                body = orjson.dumps(reply)
            if tool is not None:
                self.record(ident, route.slug, method, tool, resolved, decision,
                            "error" if "error" in (reply or {"error": 1}) else "ok", None, t0, len(raw), len(body))
            await respond(send, 200, body, headers=extra)
            return
        out = [(b"content-type", ctype.encode("latin-1")), *extra]
        status = resp.status
        if status == 404 and not client_modern:
            # a stateless upstream answers e.g. an unknown method with 404 + its JSON-RPC error; to a
            # 2025 client a 404 means "your session is gone", so the error travels on a 200
            status = 200
        nout = 0
        outcome, code = "ok", None
        try:
            if "text/event-stream" in ctype:
                out += [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
                await send({"type": "http.response.start", "status": status, "headers": out})
                async for chunk in resp.content.iter_any():
                    nout += len(chunk)
                    if outcome == "ok" and b'"error":{' in chunk:
                        outcome = "error"
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            else:
                body = await resp.read()
                nout = len(body)
                if b'"error"' in body:
                    outcome = "error"
                    with contextlib.suppress(Exception):
                        code = orjson.loads(body).get("error", {}).get("code")
                out.append((b"content-length", str(nout).encode()))
                await send({"type": "http.response.start", "status": status, "headers": out})
                await send({"type": "http.response.body", "body": body})
        except (TimeoutError, OSError, Exception) as exc:  # upstream broke mid-stream
            outcome = "timeout" if isinstance(exc, asyncio.TimeoutError) else "error"
            log.warning("upstream_stream_broken", server=route.slug, error=type(exc).__name__)
        finally:
            resp.release()
        if tool is not None:
            self.record(ident, route.slug, method, tool, resolved, decision, outcome, code, t0, len(raw), nout)

    async def _discover(self, route: Route, ident: Identity | None, user_key: str, scope: dict[str, Any],
                        req_id: Any) -> bytes:
        try:
            info = await self.server_info(route.slug, route, ident, user_key, scope, client_modern=True)
        except UpstreamError as exc:
            return rpc_error(req_id, exc.code, f"upstream: {exc}")
        return discover_result(req_id, info)

    async def _openapi_rpc(self, route: Route, resolved: Resolved, msg: dict[str, Any],
                           modern: bool = False) -> bytes:
        req_id, method = msg["id"], msg["method"]
        params = params_of(msg)
        tools = self.gw.openapi
        if method == "tools/list":
            return result_for(req_id, method, {"tools": tools.tools(route)}, modern)
        if method == "tools/call":
            try:
                return result_for(req_id, method, await tools.call(route, resolved, str(params.get("name")),
                                                                    params.get("arguments") or {}), modern)
            except KeyError:
                return rpc_error(req_id, -32602, f"Unknown tool: {params.get('name')}")
        if method in ("prompts/list", "resources/list", "resources/templates/list"):
            key = {"prompts/list": "prompts", "resources/list": "resources"}.get(method, "resourceTemplates")
            return result_for(req_id, method, {key: []}, modern)
        return rpc_error(req_id, -32601, f"Method not found: {method}")

    # -- keep-alives -----------------------------------------------------------------------------------------
    async def _keepalive_stream(self, send: Any, receive: Any, queue: asyncio.Queue[bytes] | None = None,
                                first: bytes | None = None) -> None:
        """An SSE stream: ``first`` (the legacy endpoint event), then queued messages, and a comment
        line every ``mcp_keepalive_seconds`` so idle proxies keep it open. Ends when the client
        goes away or ``b""`` is queued (server disabled, session deleted)."""
        queue = queue if queue is not None else asyncio.Queue(1)

        def gone() -> None:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(b"")

        watcher = await _open_event_stream(send, receive, gone)
        every = self.gw.settings.mcp_keepalive_seconds
        try:
            if first:
                await send({"type": "http.response.body", "body": first, "more_body": True})
            while True:
                try:
                    item: bytes | None = await asyncio.wait_for(queue.get(), every)
                except TimeoutError:
                    item = None
                if item == b"":
                    break
                chunk = b": ping\n\n" if item is None else b"event: message\ndata: " + item + b"\n\n"
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except OSError:
            pass
        finally:
            watcher.cancel()
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b""})

    # -- messages outside any call: the upstream session's GET stream, to the client sessions' ----------
    async def _listen_upstream(self, sess: ClientSession, ident: Identity | None, scope: dict[str, Any]) -> None:
        """Have the pooled upstream session this 2025 session talks through listen on its own GET
        stream (one listener per upstream session), so list_changed and resources/updated reach the
        client sessions on it. Nothing when the upstream is spoken to statelessly or refuses."""
        route = self.gw.routes.get(sess.target)
        if route is None or not route.routable or route.kind in ("openapi", "local") or \
                (route.modern is True and route.legacy is not True):
            return
        up = self.gw.upstream
        try:
            resolved = await self.gw.keys.resolve(route, ident.user_id if ident else None, _Headers(scope))
            upstream = await up.legacy_session(route, resolved, sess.user_key, sess.protocol_version,
                                               caps=sess.capabilities)
        except Exception as exc:  # the GET stream still opens, without the upstream's messages
            log.info("upstream_listen_skipped", server=sess.target, error=type(exc).__name__)
            return
        sess.upstream = upstream
        if id(upstream) in self._listeners:
            return
        task = asyncio.create_task(self._relay_outside(upstream), name="gateway-upstream-get")
        self._listeners[id(upstream)] = task
        key = id(upstream)

        def forget(_t: asyncio.Task[None]) -> None:
            self._listeners.pop(key, None)
        task.add_done_callback(forget)

    async def _relay_outside(self, upstream: Any) -> None:
        up = self.gw.upstream
        client = up.remote if upstream.remote else up.http
        headers = {**up.session_headers(upstream), "accept": "text/event-stream",
                   "mcp-protocol-version": upstream.protocol_version}
        if upstream.session_id:
            headers["mcp-session-id"] = upstream.session_id
        try:
            resp = await client.request("GET", upstream.url, b"", headers)
            try:
                if resp.status != 200 or "text/event-stream" not in resp.headers.get("content-type", ""):
                    return
                buf = b""
                async for chunk in resp.content.iter_any():
                    buf += chunk.replace(b"\r\n", b"\n")
                    while b"\n\n" in buf:
                        event, buf = buf.split(b"\n\n", 1)
                        data = b"\n".join(line[5:].lstrip(b" ") for line in event.split(b"\n")
                                          if line.startswith(b"data:"))
                        if data:
                            self._outside(upstream, data)
            finally:
                resp.release()
        except Exception as exc:  # the stream ends; the next client GET listens again
            log.info("upstream_get_stream_ended", error=type(exc).__name__)

    def _outside(self, upstream: Any, data: bytes) -> None:
        """A message of an upstream session outside any call, to the GET streams of the client
        sessions on it: resources/updated only to those that subscribed to that URI, list_changed to
        all (they are one user's, with the same credentials). Anything else is not relayed."""
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        method = msg.get("method") if isinstance(msg, dict) else None
        if method not in OUTSIDE_CALLS or "id" in msg:
            return
        uri = params_of(msg).get("uri")
        for sess in self.sessions.values():
            if sess.upstream is not upstream or sess.stream is None:
                continue
            if method == "notifications/resources/updated" and uri not in sess.subscriptions:
                continue
            with contextlib.suppress(asyncio.QueueFull):  # a stream not read: the backlog is bounded
                sess.stream.put_nowait(orjson.dumps(msg))

    async def _resume_stream(self, send: Any, receive: Any, log: StreamLog, seen: int) -> None:
        """The events of ``log`` after event ``seen``, then the rest of the call as it comes (keep-alive
        comments meanwhile); ends after the call's reply, or when the client goes away."""
        gone = asyncio.Event()
        watcher = await _open_event_stream(send, receive, gone.set)
        every = self.gw.settings.mcp_keepalive_seconds
        try:
            while not gone.is_set():
                pending = log.after(seen)
                if pending is None:  # the buffer moved past what this client saw: nothing more to say
                    break
                for event in pending:
                    await send({"type": "http.response.body", "body": event, "more_body": True})
                seen += len(pending)
                if log.done:
                    break
                waiter = asyncio.ensure_future(log.changed())
                stop = asyncio.ensure_future(gone.wait())
                done, _ = await asyncio.wait({waiter, stop}, timeout=every, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stop.cancel()
                if not done:
                    await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
        except OSError:
            pass
        finally:
            watcher.cancel()
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b""})

    # -- /mcp/{slug}/sse + /messages: the 2024-11-05 SSE transport ----------------------------------------
    async def sse(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        slug = scope["path_params"]["slug"]
        try:
            self.check_origin(scope)
            ident, grant = await self.identify(scope)
            self.route_for(slug, grant)
        except Refused as r:
            await respond(send, r.status, problem(r.status, r.title, r.detail), b"application/problem+json",
                          hdrs(r.headers))
            return
        user_key = str(ident.user_id) if ident is not None else "anon"
        sid = self.sid_prefix + secrets.token_hex(16)
        queue: asyncio.Queue[bytes] = asyncio.Queue(256)
        self.sessions[sid] = ClientSession(sid, slug, user_key, ident, "2024-11-05", {}, {}, queue)
        endpoint = f"/mcp/{slug}/messages?session_id={sid}".encode()

        try:
            await self._keepalive_stream(send, receive, queue, b"event: endpoint\ndata: " + endpoint + b"\n\n")
        finally:
            self.sessions.pop(sid, None)

    async def sse_messages(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        slug = scope["path_params"]["slug"]
        qs = scope.get("query_string", b"").decode("latin-1")
        sid = next((p[11:] for p in qs.split("&") if p.startswith("session_id=")), "")
        try:
            self.check_origin(scope)
        except Refused as r:
            await respond(send, r.status, problem(r.status, r.title, r.detail), b"application/problem+json")
            return
        sess = self.sessions.get(sid)
        if sess is None or sess.target != slug or sess.queue is None:
            await respond(send, 404, problem(404, "Not Found", "unknown session"), b"application/problem+json")
            return
        try:
            raw = await read_body(scope, receive, self.gw.settings.mcp_max_body_bytes,
                                  self.gw.settings.mcp_body_timeout_seconds)
        except TooLarge:
            await respond(send, 413, problem(413, "Payload Too Large", "the body is too large"),
                          b"application/problem+json")
            return
        except (TimeoutError, Disconnected):
            await respond(send, 408, problem(408, "Request Timeout", "the body arrived too slowly"),
                          b"application/problem+json")
            return
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await respond(send, 400, rpc_error(None, -32700, "Parse error"))
            return
        kind = classify(msg)
        if kind is None:
            await respond(send, 400, rpc_error(None, -32600, "Invalid Request"))
            return
        sess.last_used = time.monotonic()
        await respond(send, 202, b"Accepted", b"text/plain")
        if kind == "request":
            task = asyncio.create_task(self._sse_reply(sess, msg, raw, scope))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "response":  # the answer to a server's request (relay.py)
            await self.relay.answer(sess.sid, msg)
        elif msg["method"] == "notifications/cancelled":
            await self.cancel(sess, msg)

    async def _sse_reply(self, sess: ClientSession, msg: dict[str, Any], raw: bytes, scope: dict[str, Any]) -> None:
        """Answer one message of a legacy SSE session: the reply goes onto the session's stream."""
        assert sess.queue is not None
        collected: list[dict[str, Any]] = []

        async def fake_send(m: dict[str, Any]) -> None:
            if m["type"] == "http.response.start":
                collected.append({"headers": dict(m.get("headers", []))})
            elif m.get("body"):
                collected[-1].setdefault("chunks", []).append(m["body"])

        try:
            route = self.route_for(sess.target, None)
            if msg["method"] == "initialize":
                await self._initialize(None, msg, sess.target, route, sess.identity, sess.user_key, scope, sess.queue,
                                       existing=sess)
                return
            await self._forward(fake_send, scope, route, sess.identity, sess.user_key, msg, raw, False,
                                sess, [])
            if not collected:
                return
            ctype = collected[0]["headers"].get(b"content-type", b"application/json").decode()
            body = b"".join(collected[0].get("chunks", []))
            reply = final_response(parse_messages(body, ctype), msg["id"])
            out = orjson.dumps(reply) if reply is not None else rpc_error(msg["id"], -32603, "no reply")
        except Refused as r:
            out = rpc_error(msg["id"], -32000, r.detail)
        except Exception as exc:
            log.warning("sse_reply_failed", server=sess.target, error=type(exc).__name__)
            out = rpc_error(msg["id"], -32603, "internal error")
        with contextlib.suppress(asyncio.QueueFull):
            sess.queue.put_nowait(out)

    # -- /mcp/bundles/{id} -------------------------------------------------------------------------------------
    async def bundle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        bid = scope["path_params"]["bid"]
        try:
            await self._streamable(scope, receive, send, f"bundle:{bid}", bundle=True)
        except Refused as r:
            await respond(send, r.status, problem(r.status, r.title, r.detail), b"application/problem+json",
                          hdrs(r.headers))
        except TooLarge:
            await respond(send, 413, problem(413, "Payload Too Large", "the body is too large"),
                          b"application/problem+json")
        except TimeoutError:
            await respond(send, 408, problem(408, "Request Timeout", "the body arrived too slowly"),
                          b"application/problem+json")
        except Disconnected:
            return

    async def bundle_rpc(self, target: str, ident: Identity | None, user_key: str, msg: dict[str, Any],
                         scope: dict[str, Any], client_modern: bool, sess: ClientSession | None) -> bytes:
        req_id, method = msg["id"], msg["method"]
        params = params_of(msg)
        slugs = await self.gw.bundles.servers(target.split(":", 1)[1])
        if method == "ping":
            return result_for(req_id, method, {}, client_modern)
        if method == "server/discover":
            return discover_result(req_id, await self.server_info(target, None, ident, user_key, scope))
        if method == "tools/list":
            async def one(slug: str) -> list[dict[str, Any]]:
                try:
                    route = self.route_for(slug, None)
                    tools = await self.list_tools(route, ident, user_key, scope)
                except (Refused, UpstreamError) as exc:
                    log.info("bundle_member_skipped", server=slug, error=str(exc)[:200])
                    return []
                return [{**t, "name": f"{slug}{SEP}{t['name']}"} for t in tools]
            lists = await asyncio.gather(*(one(s) for s in slugs))
            return result_for(req_id, method, {"tools": [t for lst in lists for t in lst]}, client_modern)
        if method == "tools/call":
            name = str(params.get("name") or "")
            slug, sep, tool = name.partition(SEP)
            if not sep or slug not in slugs:
                return rpc_error(req_id, -32602, f"Unknown tool: {name}")
            try:
                route = self.route_for(slug, None)
            except Refused as r:
                return rpc_error(req_id, -32000, r.detail)
            reply = await self.call_tool(route, ident, user_key, tool, params.get("arguments") or {}, scope)
            if "error" in reply:
                return orjson.dumps({"jsonrpc": "2.0", "id": req_id, "error": reply["error"]})
            return result_for(req_id, method, reply["result"], client_modern)
        if method in ("prompts/list", "resources/list", "resources/templates/list"):
            key = {"prompts/list": "prompts", "resources/list": "resources"}.get(method, "resourceTemplates")
            return result_for(req_id, method, {key: []}, client_modern)
        return rpc_error(req_id, -32601, f"Method not found: {method}")

    # -- the gateway as a client (REST, bundles) ----------------------------------------------------------------
    async def list_tools(self, route: Route, ident: Identity | None, user_key: str,
                         scope: dict[str, Any]) -> list[dict[str, Any]]:
        resolved = await self.gw.keys.resolve(route, ident.user_id if ident else None, _Headers(scope))
        if route.kind == "openapi":
            return self.gw.openapi.tools(route)
        reply = await self.gw.upstream.call(route, resolved, user_key, "tools/list", {})
        if "error" in reply:
            raise UpstreamError(str(reply["error"].get("message")), int(reply["error"].get("code", -32603)))
        return list(reply["result"].get("tools") or [])

    async def call_tool(self, route: Route, ident: Identity | None, user_key: str, tool: str,
                        arguments: dict[str, Any], scope: dict[str, Any]) -> dict[str, Any]:
        """One tools/call made by the gateway (REST try-it-out, bundles): key, quota, event; returns
        the JSON-RPC reply ({"result"} or {"error"}) plus "_decision" when one was made."""
        t0 = time.perf_counter()
        resolved = await self.gw.keys.resolve(route, ident.user_id if ident else None, _Headers(scope))
        if resolved.missing:
            return {"error": {"code": -32602, "message": f"{route.slug} needs {', '.join(resolved.missing)}",
                              "data": {"missing": list(resolved.missing)}}}
        decision = await self.decide(ident, route.slug, resolved, scope)
        if decision is not None and not decision.allowed:
            self.record(ident, route.slug, "tools/call", tool, resolved, decision, "refused",
                        decision.jsonrpc_error()["code"], t0, 0, 0)
            return {"error": decision.jsonrpc_error(), "_decision": decision}
        try:
            if route.kind == "openapi":
                reply = {"result": await self.gw.openapi.call(route, resolved, tool, arguments)}
            else:
                reply = await self.gw.upstream.call(route, resolved, user_key, "tools/call",
                                                    {"name": tool, "arguments": arguments})
        except KeyError:
            reply = {"error": {"code": -32602, "message": f"Unknown tool: {tool}"}}
        except UpstreamError as exc:
            self.record(ident, route.slug, "tools/call", tool, resolved, decision,
                        "timeout" if exc.timeout else "error", exc.code, t0, 0, 0)
            return {"error": {"code": exc.code, "message": f"upstream: {exc}"}, "_decision": decision}
        self.record(ident, route.slug, "tools/call", tool, resolved, decision,
                    "error" if "error" in reply else "ok", reply.get("error", {}).get("code"), t0, 0,
                    len(orjson.dumps(reply)))
        reply["_decision"] = decision
        return reply


def result_for(req_id: Any, method: str, result: dict[str, Any], modern: bool) -> bytes:
    """A result the gateway answers itself (bundles, OpenAPI servers), with the fields a
    2026-07-28 client requires when it is one."""
    return rpc_result(req_id, modernize(method, result) if modern else result)


def discover_result(req_id: Any, info: dict[str, Any]) -> bytes:
    result: dict[str, Any] = {"supportedVersions": [MODERN], "capabilities": info["capabilities"],
                              "resultType": "complete", "cacheScope": "private", "ttlMs": 0,
                              "_meta": {SERVER_INFO_META: info["serverInfo"]}}
    if info.get("instructions"):
        result["instructions"] = info["instructions"]
    return rpc_result(req_id, result)


def _host_allowed(host: str, allowed: list[str]) -> bool:
    """``host`` (a Host header or an origin's host[:port]) names one of ``allowed`` (host, or host:port)."""
    host = host.lower()
    name = host[:host.find("]") + 1] if host.startswith("[") else host.split(":", 1)[0]  # without the port
    return host in allowed or name in allowed


def _err(e: dict[str, Any]) -> dict[str, Any]:
    return {"code": e["code"], "message": e["message"], "data": e.get("data")}


class _Headers:
    """A read-only, case-insensitive view of an ASGI scope's headers (no copy per request)."""

    __slots__ = ("scope",)

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope

    def items(self) -> Any:
        for k, v in self.scope["headers"]:
            yield k.decode("latin-1"), v.decode("latin-1")

    def get(self, name: str, default: Any = None) -> Any:
        value = header(self.scope, name.lower().encode("latin-1"))
        return default if value is None else value


# re-exported for type checkers of callers
__all__ = ["CAPS_META", "INFO_META", "McpRouter"]


async def _open_event_stream(send: Any, receive: Any, on_gone: Callable[[], None]) -> asyncio.Task[None]:
    """Start a GET stream's SSE answer and watch for the client going away: ``on_gone`` runs once
    it has (the caller cancels the returned watcher when its stream ends first)."""

    async def watch_disconnect() -> None:
        with contextlib.suppress(Exception):
            while (await receive())["type"] != "http.disconnect":
                pass
        on_gone()

    watcher = asyncio.create_task(watch_disconnect())
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no")]})
    return watcher
