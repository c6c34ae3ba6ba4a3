"""Talking to upstream MCP servers, in whichever protocol era they speak.

- One :class:`~wemcp.gateway.h1client.H1Client` (a lean HTTP/1.1 client: ~4x less CPU per request
  than aiohttp, which was a large share of the gateway's cost per call) with a keep-alive
  connection pool for every upstream. A TCP connection
  carries no MCP state and no secret of its own (credentials travel on each request's headers), so
  connections are shared; *MCP sessions* are not.
- **2026-07-28 upstreams** are stateless: each request is one POST; nothing to pool but sockets.
- **2025 upstreams** need a session (``initialize`` → ``Mcp-Session-Id``). Sessions are pooled per
  ``(server, route generation, user, key source, fingerprint of the credential values)``: reused
  by every client session of that user with those credentials, never shared between users or
  between different secrets. A session the upstream forgot (404) is re-opened once transparently.
  A route change (disable, redeploy) bumps the generation, which retires its sessions.
- Two connection pools: the deployer's bridge (platform-internal, on the platform's network) and
  *remote* upstreams, whose URLs users supplied: that pool connects only to addresses the egress
  policy allows (``wemcp.common.netpolicy``, checked per new connection, at connect time). Pools are
  keyed by origin, so a remote URL naming the bridge's address never borrows a bridge connection.
- The era of an upstream comes from ``server.deployed``'s ``protocol_versions``; when unknown, one
  ``server/discover`` probe decides and is remembered on the route.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from wemcp.common import sse
from wemcp.common.logging import get_logger
from wemcp.common.netpolicy import EgressPolicy, refusal_in
from wemcp.common.trust import HEADER_ASSERTION, Issuer
from wemcp.gateway.h1client import H1Client, H1Error, H1Response
from wemcp.gateway.keys import Resolved, fill
from wemcp.gateway.routes import MODERN, Route

log = get_logger("wemcp.gateway.upstream")
LEGACY_VERSION = "2025-11-25"
PV_META = "io.modelcontextprotocol/protocolVersion"
CAPS_META = "io.modelcontextprotocol/clientCapabilities"
INFO_META = "io.modelcontextprotocol/clientInfo"
SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"
GATEWAY_INFO = {"name": "wemcp-gateway", "version": "0.1.0"}
CALLER_HEADER = "x-wemcp-caller"  # to hosted servers' bridges only, beside their credential
NAME_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


# Result fields of 2026-07-28 that no 2025 revision has (mcp_types: the 2026 result models minus the
# 2025-11-25 ones, for every method both revisions share); ``inputRequests``/``requestState`` only
# come with ``resultType: input_required``, which relay.py turns into questions.
MODERN_ONLY = ("resultType", "ttlMs", "cacheScope")


def legacy_result(result: dict[str, Any]) -> dict[str, Any]:
    """A 2026-07-28 result as a 2025 client must see it: the 2026-only fields dropped (the TypeScript
    SDK refuses unknown keys on empty results), and the ``serverInfo`` stamp 2026 servers put in
    ``_meta``. In place; returns it."""
    for k in MODERN_ONLY:
        result.pop(k, None)
    meta = result.get("_meta")
    if isinstance(meta, dict) and SERVER_INFO_META in meta:
        rest = {k: v for k, v in meta.items() if k != SERVER_INFO_META}
        if rest:
            result["_meta"] = rest
        else:
            del result["_meta"]
    return result


CACHEABLE = frozenset({"tools/list", "prompts/list", "resources/list", "resources/templates/list",
                       "resources/read"})  # 2026-07-28 results that carry ttlMs/cacheScope


def modernize(method: str, result: dict[str, Any]) -> dict[str, Any]:
    """A 2025 result, shaped for a 2026-07-28 client (which requires ``resultType``, and on lists and
    reads the cache hints: immediately stale, private). In place; returns it."""
    result.setdefault("resultType", "complete")
    if method in CACHEABLE:
        result.setdefault("cacheScope", "private")
        result.setdefault("ttlMs", 0)
    return result


class UpstreamError(Exception):
    def __init__(self, message: str, code: int = -32603, timeout: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.timeout = timeout


@dataclass
class LegacySession:
    session_id: str | None
    protocol_version: str
    init_result: dict[str, Any]
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # credentials, for the DELETE at close
    remote: bool = False  # a user-supplied upstream: through the egress-checked pool
    bridge: str | None = None  # a hosted server's slug: requests outside a call get a fresh assertion
    created: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)


@dataclass
class Streaming:
    """A 2025 upstream answering with an SSE stream (``send(..., stream=True)``): the caller reads
    the messages (relay.py), restoring ``req_id`` on the reply to ``uid``; ``session`` is where
    answers to the server's own requests go."""

    resp: Any
    session: LegacySession
    uid: int
    req_id: Any


def caps_key(caps: dict[str, Any] | None) -> str:
    """The client capabilities a pooled 2025 upstream session is opened with: the ones that let a
    server ask the client (sampling, elicitation, roots) — so a server asks only clients that can
    answer. ``roots.listChanged`` is not declared (the gateway does not relay that notification)."""
    if not caps:
        return ""
    kept = {k: (v if k != "roots" else {}) for k, v in caps.items()
            if k in ("sampling", "elicitation", "roots") and isinstance(v, dict)}
    return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS).decode() if kept else ""


class _Content:
    def __init__(self, body: bytes) -> None:
        self.body = body

    async def iter_any(self) -> Any:
        yield self.body


class Buffered:
    """An upstream reply already read (and its JSON-RPC id restored), shaped like the parts of
    :class:`~wemcp.gateway.h1client.H1Response` the router uses."""

    def __init__(self, status: int, ctype: str, body: bytes) -> None:
        self.status, self.body = status, body
        self.headers = {"content-type": ctype}
        self.content = _Content(body)

    async def read(self) -> bytes:
        return self.body

    def release(self) -> None:
        pass


def parse_messages(body: bytes, content_type: str) -> list[dict[str, Any]]:
    """JSON-RPC messages of an upstream reply: a JSON body or the ``data:`` lines of an SSE body."""
    if "text/event-stream" in content_type:
        out: list[dict[str, Any]] = []
        for event in sse.parse(body, dispatch_incomplete=True):  # a body may end without the blank line
            with contextlib.suppress(Exception):
                out.append(orjson.loads(event.data))
        return out
    if not body.strip():
        return []
    parsed = orjson.loads(body)
    return parsed if isinstance(parsed, list) else [parsed]


def final_response(msgs: list[dict[str, Any]], req_id: Any) -> dict[str, Any] | None:
    for m in msgs:
        if m.get("id") == req_id and ("result" in m or "error" in m):
            return m
    return None


class Upstream:
    def __init__(self, *, signer: Issuer, max_connections: int = 512, timeout: float = 60.0,
                 connect_timeout: float = 3.0, max_sessions: int = 10_000, egress: EgressPolicy | None = None) -> None:
        self.signer = signer  # signs the deployer bridges' credential (a cached token per slug)
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.egress = egress or EgressPolicy()
        self.max_connections = max_connections
        self.max_sessions = max_sessions
        self.http: H1Client | None = None  # the deployer's bridge (and the platform's own services)
        self.remote: H1Client | None = None  # user-supplied upstreams, under the egress policy
        self.sessions: dict[tuple[Any, ...], LegacySession] = {}
        self._locks: dict[tuple[Any, ...], asyncio.Lock] = {}
        self._discover: dict[tuple[str, int], dict[str, Any]] = {}
        self.opened = 0  # legacy upstream sessions opened (tests: pooling means few)
        self._next_id = 0  # ids of requests forwarded on pooled sessions (unique per gateway)

    async def start(self) -> None:
        # idle connections kept 60 s: below the bridge's keep-alive (75 s); remote servers that close
        # sooner and say so (Keep-Alive: timeout=N) are honoured by the client
        self.http = H1Client(max_connections=self.max_connections, connect_timeout=self.connect_timeout,
                             timeout=self.timeout, keepalive_seconds=60.0)
        self.remote = H1Client(max_connections=self.max_connections, connect_timeout=self.connect_timeout,
                               timeout=self.timeout, keepalive_seconds=60.0, egress=self.egress)

    async def close(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109 (bounds each DELETE)
        """End the pooled upstream sessions (DELETE, bounded) and the connection pool."""
        if self.http is None:
            return
        pooled = [(k, s) for k, s in self.sessions.items() if s.session_id]
        self.sessions.clear()
        if pooled:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*(self._delete(s) for _, s in pooled), return_exceptions=True)
        for client in (self.http, self.remote):
            if client is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(timeout):
                        await client.close()

    async def _delete(self, sess: LegacySession) -> None:
        client = self.remote if sess.remote else self.http
        assert client is not None and sess.session_id and sess.url
        h = {"mcp-session-id": sess.session_id, "mcp-protocol-version": sess.protocol_version,
             **self.session_headers(sess)}
        async with await client.request("DELETE", sess.url, headers=h) as resp:
            await resp.read()

    def retire(self, slug: str) -> None:
        """Forget every pooled session and cached discovery of a server (disabled or redeployed)."""
        for key in [k for k in self.sessions if k[0] == slug]:
            self.sessions.pop(key, None)
            self._locks.pop(key, None)
        for key in [k for k in self._discover if k[0] == slug]:
            self._discover.pop(key, None)

    # -- request shape -----------------------------------------------------------------------------
    def target(self, route: Route, resolved: Resolved) -> tuple[str, dict[str, str]]:
        """The URL and credential headers for this caller (placeholders filled). A hosted server's
        bridge (local or a cloud function) answers only the platform: its assertion is signed with
        the key derived for that slug, one cached token per slug (a dict lookup per call)."""
        assert route.endpoint is not None
        headers: dict[str, str] = {"content-type": "application/json",
                                   "accept": "application/json, text/event-stream"}
        if route.hosted:
            headers[HEADER_ASSERTION] = self.signer.bridge_token(route.slug)
            for name, value in resolved.values.items():
                headers[f"x-wemcp-env-{name.lower()}"] = value
            return route.endpoint, headers
        for name, template in route.headers:
            value = fill(template, resolved.values)
            if "{" not in value:
                headers[name] = value
        return fill(route.endpoint, resolved.values), headers

    async def post(self, url: str, body: bytes, headers: dict[str, str], *, remote: bool) -> H1Response:
        """``remote``: a user-supplied upstream (``not route.hosted``): the egress-checked pool. No
        default: every caller decides which pool its URL belongs to."""
        client = self.remote if remote else self.http
        assert client is not None
        try:
            return await client.request("POST", url, body, headers)
        except TimeoutError:
            raise UpstreamError("the server did not answer in time", -32001, timeout=True) from None
        except H1Error as exc:
            refused = refusal_in(exc)
            if refused is not None:
                raise UpstreamError(f"refused: {refused}", -32002) from None
            raise UpstreamError(f"the server is unreachable ({type(exc).__name__})", -32002) from None

    async def read(self, resp: Any) -> bytes:
        try:
            return await resp.read()
        except TimeoutError:
            raise UpstreamError("the server did not answer in time", -32001, timeout=True) from None
        except H1Error as exc:
            raise UpstreamError(f"the server broke the connection ({type(exc).__name__})", -32002) from None
        finally:
            resp.release()

    # -- era --------------------------------------------------------------------------------------------
    async def is_modern(self, route: Route, resolved: Resolved) -> bool:
        if route.modern is None:
            try:
                await self.discover(route, resolved)
                route.modern = True
            except UpstreamError as exc:
                if exc.timeout or exc.code == -32002:
                    raise
                route.modern = False
        return route.modern

    async def modern_for(self, route: Route, resolved: Resolved, client_modern: bool) -> bool:
        """The era a call of this client goes upstream in: the client's own when the upstream is
        known to speak it (``server.deployed``'s ``protocol_versions``: a 2025 client of a server of
        both eras — every hosted server behind the bridge — gets a 2025 upstream session, so there is
        nothing to translate and the server can talk to it during a call), else the upstream's."""
        modern = await self.is_modern(route, resolved)
        if client_modern or not modern:
            return modern
        return route.legacy is not True

    async def discover(self, route: Route, resolved: Resolved) -> dict[str, Any]:
        """The upstream's ``server/discover`` result (2026-07-28), cached per route generation."""
        key = (route.slug, route.generation)
        hit = self._discover.get(key)
        if hit is not None:
            return hit
        url, headers = self.target(route, resolved)
        headers.update({"mcp-protocol-version": MODERN, "mcp-method": "server/discover"})
        body = orjson.dumps({"jsonrpc": "2.0", "id": 0, "method": "server/discover", "params": {"_meta": {
            PV_META: MODERN, CAPS_META: {}, INFO_META: GATEWAY_INFO}}})
        resp = await self.post(url, body, headers, remote=not route.hosted)
        status, ctype = resp.status, resp.headers.get("content-type", "")
        raw = await self.read(resp)
        if status >= 400 and "json" not in ctype and "event-stream" not in ctype:
            raise UpstreamError(f"server/discover answered HTTP {status}", -32600)
        msg = final_response(parse_messages(raw, ctype), 0)
        if msg is None or "result" not in msg or MODERN not in (msg["result"].get("supportedVersions") or []):
            raise UpstreamError("the server does not speak 2026-07-28", -32600)
        self._discover[key] = msg["result"]
        return msg["result"]

    # -- 2025 sessions ---------------------------------------------------------------------------------
    async def legacy_session(self, route: Route, resolved: Resolved, user_key: str,
                             protocol_version: str = LEGACY_VERSION, *,
                             stale: LegacySession | None = None,
                             caps: dict[str, Any] | None = None) -> LegacySession:
        """The pooled session of this key; ``stale``: the session the upstream just forgot (404),
        replaced once however many concurrent requests saw it fail; ``caps``: the client's
        capabilities (see ``caps_key``)."""
        ck = caps_key(caps)
        key = (route.slug, route.generation, user_key, resolved.source, resolved.fingerprint, ck, protocol_version)
        sess = self.sessions.get(key)
        if sess is not None and sess is not stale:
            sess.last_used = time.monotonic()
            return sess
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            sess = self.sessions.get(key)
            if sess is not None and sess is not stale:
                return sess
            self.sessions.pop(key, None)
            sess = await self._initialize(route, resolved, protocol_version, orjson.loads(ck) if ck else {})
            if len(self.sessions) >= self.max_sessions:  # drop the least recently used
                oldest = min(self.sessions, key=lambda k: self.sessions[k].last_used)
                self.sessions.pop(oldest, None)
            self.sessions[key] = sess
            self.opened += 1
            return sess

    async def _initialize(self, route: Route, resolved: Resolved, protocol_version: str,
                          caps: dict[str, Any] | None = None) -> LegacySession:
        url, headers = self.target(route, resolved)
        body = orjson.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": protocol_version, "capabilities": caps or {}, "clientInfo": GATEWAY_INFO}})
        resp = await self.post(url, body, headers, remote=not route.hosted)
        sid = resp.headers.get("mcp-session-id")
        status, ctype = resp.status, resp.headers.get("content-type", "")
        raw = await self.read(resp)
        msg = final_response(parse_messages(raw, ctype), 0) if ("json" in ctype or "event-stream" in ctype) else None
        if msg is None or "result" not in msg:
            detail = (msg or {}).get("error", {}).get("message") if msg else f"HTTP {status}"
            raise UpstreamError(f"the server refused initialize: {detail}", -32002)
        result = msg["result"]
        pv = str(result.get("protocolVersion") or protocol_version)
        h2 = dict(headers)
        h2["mcp-protocol-version"] = pv
        if sid:
            h2["mcp-session-id"] = sid
        r2 = await self.post(url, b'{"jsonrpc":"2.0","method":"notifications/initialized"}', h2,
                             remote=not route.hosted)
        await self.read(r2)
        log.info("upstream_session_opened", server=route.slug, protocol_version=pv)
        kept = {k: v for k, v in headers.items() if k not in ("content-type", "accept", HEADER_ASSERTION)}
        return LegacySession(sid, pv, result, url, kept, remote=not route.hosted,
                             bridge=route.slug if route.hosted else None)

    def session_headers(self, sess: LegacySession) -> dict[str, str]:
        """A pooled session's credentials for a request outside a call (its DELETE, an answer to the
        server's own request): the session outlives any one assertion, so a current one is added."""
        if sess.bridge is None:
            return sess.headers
        return {**sess.headers, HEADER_ASSERTION: self.signer.bridge_token(sess.bridge)}

    # -- one request, as a client of the upstream ----------------------------------------------------------
    async def send(self, route: Route, resolved: Resolved, user_key: str, msg: dict[str, Any],
                   raw: bytes | None, *, client_modern: bool, client_caps: dict[str, Any] | None = None,
                   client_info: dict[str, Any] | None = None,
                   legacy_version: str = LEGACY_VERSION, stream: bool = False,
                   on_sent: Callable[[LegacySession, int], None] | None = None) -> Any:
        """Forward one JSON-RPC message; returns the unread upstream response (the caller streams
        it back or reads it). ``raw`` is the client's own bytes, forwarded untouched when the eras
        match. ``stream``: a 2025 upstream's SSE reply comes back as ``Streaming`` (relay.py reads
        it: the server may ask the client something before it answers). ``on_sent(session, id)``: where
        a request went on a pooled 2025 session, and under which id (so a cancellation can follow it)."""
        method = msg.get("method", "")
        modern = await self.modern_for(route, resolved, client_modern)
        url, headers = self.target(route, resolved)
        if modern:
            if route.hosted:  # whose 2026-07-28 call it is: the bridge binds a parked call's token to it
                headers[CALLER_HEADER] = user_key
            headers["mcp-protocol-version"] = MODERN
            headers["mcp-method"] = method
            pname = NAME_PARAM.get(method)
            params = msg.get("params") if isinstance(msg.get("params"), dict) else None
            if pname and params is not None and isinstance(params.get(pname), str):
                headers["mcp-name"] = params[pname]
            if client_modern and raw is not None:
                body = raw
            else:
                p = dict(params or {})
                meta = dict(p.get("_meta") or {})
                meta.setdefault(PV_META, MODERN)
                meta.setdefault(CAPS_META, client_caps or {})
                meta.setdefault(INFO_META, client_info or GATEWAY_INFO)
                p["_meta"] = meta
                body = orjson.dumps({**msg, "params": p})
            return await self.post(url, body, headers, remote=not route.hosted)
        # a 2025 upstream: through the pooled session of this user and these credentials.
        # Several client sessions of one user share this upstream session, and each numbers its
        # requests from 0: forwarded as they are, two in-flight requests could carry the same id on
        # one upstream session, and the upstream would answer one of them to the other (or drop
        # it). So every request gets an id unique on the gateway, and the reply gets its id back.
        out = msg
        caps = client_caps
        if client_modern:
            params = msg.get("params")
            if isinstance(params, dict) and isinstance(params.get("_meta"), dict):
                if caps is None and isinstance(params["_meta"].get(CAPS_META), dict):
                    caps = params["_meta"][CAPS_META]
                meta = {k: v for k, v in params["_meta"].items()
                        if k not in (PV_META, CAPS_META, INFO_META)}
                p = {**params, "_meta": meta} if meta else {k: v for k, v in params.items() if k != "_meta"}
                out = {**msg, "params": p}
        req_id = msg.get("id")
        self._next_id += 1
        uid = self._next_id
        if "id" in msg:
            out = {**out, "id": uid}
            body = orjson.dumps(out)
        else:
            body = raw if raw is not None and out is msg else orjson.dumps(out)
        stale: LegacySession | None = None
        last_status = 0
        for attempt in range(4):
            sess = await self.legacy_session(route, resolved, user_key, legacy_version, stale=stale, caps=caps)
            stale = None
            h = dict(headers)
            h["mcp-protocol-version"] = sess.protocol_version
            if sess.session_id:
                h["mcp-session-id"] = sess.session_id
            if on_sent is not None and "id" in msg:
                on_sent(sess, uid)
            resp = await self.post(url, body, h, remote=sess.remote)
            last_status = resp.status
            if resp.status == 404 and sess.session_id:
                resp.release()  # the upstream forgot the session (restart, idle expiry): open another
                stale = sess
                continue
            if resp.status >= 500 and time.monotonic() - sess.created < 2.0:
                # SDK servers may still be finishing the handshake of a session just opened
                resp.release()
                await asyncio.sleep(0.05 * (attempt + 1))
                continue
            if "id" not in msg:
                return resp
            status = resp.status
            if stream and "text/event-stream" in resp.headers.get("content-type", ""):
                return Streaming(resp, sess, uid, req_id)
            reply = await self.reply(resp, uid)
            if reply is None:
                return Buffered(status if status >= 400 else 502, "application/json", orjson.dumps({
                    "jsonrpc": "2.0", "id": req_id, "error": {
                        "code": -32002, "message": f"upstream: HTTP {status} without a JSON-RPC reply"}}))
            reply["id"] = req_id
            return Buffered(200, "application/json", orjson.dumps(reply))
        # never pass the upstream's 404 through: to the client it would mean *its* session is gone
        return Buffered(200, "application/json", orjson.dumps({"jsonrpc": "2.0", "id": req_id, "error": {
            "code": -32002, "message": f"upstream: the server keeps refusing its session (HTTP {last_status})"}}))

    async def call(self, route: Route, resolved: Resolved, user_key: str, method: str,
                   params: dict[str, Any] | None, req_id: Any = 1) -> dict[str, Any]:
        """One request made by the gateway itself (REST, bundles, legacy SSE): the parsed response."""
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id, "method": method}
        if params is not None:
            msg["params"] = params
        resp = await self.send(route, resolved, user_key, msg, None, client_modern=False)
        out = await self.reply(resp, req_id)
        if out is None:
            raise UpstreamError(f"the server answered HTTP {resp.status} without a JSON-RPC response", -32002)
        return out

    async def reply(self, resp: Any, req_id: Any) -> dict[str, Any] | None:
        """The JSON-RPC response to ``req_id`` in a whole answer (JSON or SSE, read to the end); None
        when it holds none."""
        ctype = resp.headers.get("content-type", "")
        raw = await self.read(resp)
        try:
            return final_response(parse_messages(raw, ctype), req_id)
        except Exception:
            return None
