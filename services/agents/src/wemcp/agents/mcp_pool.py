"""The MCP connection pool of the agents service: what a request to an MCP server reuses from the
requests before it.

One entry per **pool key** = SHA-256 over (user id, run scope — ``chat`` or ``agent:<id>`` —, server
URL, every header the entry's requests carry: the identity headers, ``Authorization`` and the
caller-supplied ``headers``). Two identities or two sets of credentials therefore never share
anything, not even a TCP connection. An entry holds:

- an HTTP connection pool to the server (keep-alive connections, dropped after
  ``mcp_keepalive_seconds`` idle, before the server's own keep-alive timeout);
- the protocol era the server speaks: refs through the gateway are pinned to the stateless
  2026-07-28 revision from the first request (the gateway's MCP router speaks it); ``server_url``
  servers are probed once (the SDK's ``auto`` mode) and the answer is kept;
- the server's ``tools/list`` result for ``mcp_tools_ttl_seconds`` (5 s), dropped at once when a
  call through the entry fails in any way other than the tool's own error (a 401/403/404 from the
  gateway, a disabled server, a timeout, a vanished tool).

**What is never pooled: the signed agent-run context.** The gateway reads ``X-WeMcp-Agent-Run``
from every ``tools/call`` request and the token names one run (its own ``run_id``, 15 minutes), so
it travels on each request, from the per-request HTTP client over the entry's connections, never
as a property of a pooled connection: a plain completion can never send a run's context (its calls
stay metered) and every run's calls carry that run's context (they stay unmetered).

**Why no held MCP sessions.** A session sends fixed headers, so it could carry the run context only
by being per run (cold every run) or shared across runs (wrong quota). The 2026-07-28 revision needs
no session at all: one POST per call, nothing to keep alive or to lose. Measured on loopback
(bench/results/agents-pool.md, one ``tools/call`` per request, p50): held session 2.3 ms, per-request
stateless client over a pooled entry 3.9 ms, the old per-request connection 31 ms — most of which
was a new HTTP client's TLS context (≈ 26 ms; the pool shares one), the era probe and ``tools/list``.
Servers that only speak the 2025 revisions still work: they get a new session per request
(``initialize``) over the pooled connections, with the pooled tool list.

**Failure handling.** A request that fails on a *reused* keep-alive connection before any response
came back (the server or a middlebox had dropped the connection) is sent once more on a new
connection pool; a request on a new connection is never repeated. A server that cannot be reached
is an HTTP answer (502, or 504 when too slow) carrying a JSON-RPC error, so one failed call fails
that call and not the run (see ``_Borrowed``). The entries are bounded
(``mcp_pool_max_entries``, least recently used first; an entry in use is closed when its last user
releases it), unused entries are closed after ``mcp_pool_idle_seconds``, and all are closed on
shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import ssl
import time
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx
import mcp.types as types
from mcp import Client
from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT
from mcp.types.version import MODERN_PROTOCOL_VERSIONS

from wemcp.agents.config import Settings
from wemcp.common.logging import get_logger
from wemcp.common.netpolicy import EgressRefused, refusal_in

log = get_logger("wemcp.agents.mcp_pool")
MODERN = MODERN_PROTOCOL_VERSIONS[-1]  # 2026-07-28
_DEAD = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def pool_key(user_id: str, scope: str, url: str, headers: dict[str, str]) -> str:
    """The entry a request may use: equal only for the same user, run scope, URL and headers."""
    material = [user_id, scope, url, sorted((k.lower(), v) for k, v in headers.items())]
    return hashlib.sha256(json.dumps(material, separators=(",", ":")).encode()).hexdigest()


def _env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY), as httpx's
    own clients would use it."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


@dataclass(eq=False)
class PoolEntry:
    key: str
    url: str
    transport: httpx.AsyncBaseTransport
    mode: str  # what the next client opens with: MODERN (pinned), "auto" (probe) or "legacy"
    initial_mode: str
    discover: types.DiscoverResult | None = None
    tools: types.ListToolsResult | None = None
    tools_expire: float = 0.0
    users: int = 0
    last_used: float = field(default_factory=time.monotonic)
    retired: bool = False
    closed: bool = False
    egress: bool = False  # a caller-supplied server_url: connections checked by the egress policy
    refused: EgressRefused | None = None  # the last connection the policy refused (for a clear 400)
    listed: int = 0  # tools/list sent
    reused: int = 0  # tool lists served from here
    replaced: int = 0  # dead connections replaced
    _old: list[httpx.AsyncBaseTransport] = field(default_factory=list)

    def borrow(self, pool: McpPool) -> httpx.AsyncBaseTransport:
        return _Borrowed(self, pool)

    def cached_tools(self) -> types.ListToolsResult | None:
        if self.tools is not None and time.monotonic() < self.tools_expire:
            return self.tools
        return None

    def keep_tools(self, tools: list[types.Tool], ttl: float) -> None:
        self.listed += 1
        if ttl > 0:
            self.tools = types.ListToolsResult(tools=tools)
            self.tools_expire = time.monotonic() + ttl

    def learn(self, client: Client) -> None:
        """After a client opened in ``auto`` mode: the era the server chose, for the next ones."""
        if self.mode != "auto":
            return
        if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
            self.mode, self.discover = client.protocol_version, client.session.discover_result
        else:
            self.mode = "legacy"

    def invalidate(self, *, era: bool = False) -> None:
        """Forget the tool list (and with ``era``, what the server speaks): the next request asks again."""
        self.tools = None
        if era:
            self.mode, self.discover = self.initial_mode, None

    def replace_transport(self, new: httpx.AsyncBaseTransport) -> None:
        # Requests still in flight on the old connections finish there; they are closed with the entry.
        self._old.append(self.transport)
        self.transport = new
        self.replaced += 1

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        for t in (self.transport, *self._old):
            with contextlib.suppress(Exception):
                await t.aclose()


class _Borrowed(httpx.AsyncBaseTransport):
    """An entry's connections as one request's HTTP client sees them: closing the client leaves them
    open; a request that failed on a reused connection before any response is sent once more; and a
    server that cannot be reached is an HTTP answer (502, or 504 when it was too slow) with a JSON-RPC
    error, never an exception: the SDK's streamable HTTP client lets a network exception crash its
    task group, which would cancel the whole run instead of failing one call."""

    def __init__(self, entry: PoolEntry, pool: McpPool) -> None:
        self._entry, self._pool = entry, pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        where = f"{request.url.host}:{request.url.port or request.url.scheme}"
        try:
            response = await self._send(request)
        except httpx.TimeoutException as exc:
            return _failed(request, 504, REQUEST_TIMEOUT, f"the MCP server at {where} did not answer in time "
                           f"({type(exc).__name__})")
        except httpx.TransportError as exc:
            refused = refusal_in(exc)
            if refused is not None:
                self._entry.refused = refused
                return _failed(request, 502, CONNECTION_CLOSED, f"refused: {refused}")
            return _failed(request, 502, CONNECTION_CLOSED, f"cannot reach the MCP server at {where} "
                           f"({type(exc).__name__})")
        return httpx.Response(response.status_code, headers=response.headers, stream=_Guarded(response.stream),
                              extensions=response.extensions, request=request)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        entry = self._entry
        transport = entry.transport
        opened = False
        outer = request.extensions.get("trace")

        async def trace(name: str, info: dict[str, Any]) -> None:
            nonlocal opened
            if name.startswith("connection.connect_"):
                opened = True
            if outer is not None:
                await outer(name, info)

        request.extensions["trace"] = trace
        try:
            return await transport.handle_async_request(request)
        except _DEAD as exc:
            if opened or entry.closed:
                raise  # a new connection that failed is the server's answer, not a stale connection
            log.info("mcp_connection_replaced", error=type(exc).__name__, host=request.url.host)
            if entry.transport is transport:  # other requests may have replaced it already
                entry.replace_transport(self._pool.new_transport(entry.url, egress=entry.egress))
            if outer is None:
                request.extensions.pop("trace", None)
            else:
                request.extensions["trace"] = outer
            return await entry.transport.handle_async_request(request)

    async def aclose(self) -> None:
        return None


class _Guarded(httpx.AsyncByteStream):
    """A response body whose connection breaks mid-way raises what the SDK handles (``StreamError``:
    the call fails with a parse error) rather than a network exception that crashes its task group."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def __aiter__(self) -> Any:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx.TransportError as exc:
            raise httpx.StreamError(f"the connection broke mid-answer ({type(exc).__name__})") from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


def _failed(request: httpx.Request, status: int, code: int, message: str) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    return httpx.Response(status, json=body, request=request)


class McpPool:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._entries: OrderedDict[str, PoolEntry] = OrderedDict()
        self._ssl: ssl.SSLContext | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.closed = False

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap(), name="agents-mcp-pool-reaper")

    async def aclose(self) -> None:
        """Closes every entry, in use or not (at shutdown nothing is served any more)."""
        self.closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(BaseException):
                await self._reaper
        entries = list(self._entries.values())
        self._entries.clear()
        for e in entries:
            e.retired = True
            await e.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _reap(self) -> None:
        idle = self.settings.mcp_pool_idle_seconds
        while True:
            await asyncio.sleep(max(0.05, min(idle / 2, 5.0)))
            self.reap()

    def reap(self) -> None:
        cutoff = time.monotonic() - self.settings.mcp_pool_idle_seconds
        for e in [e for e in self._entries.values() if e.users == 0 and e.last_used < cutoff]:
            self._drop(e)

    # -- use --------------------------------------------------------------------------------------
    def new_transport(self, url: str, *, egress: bool = False) -> httpx.AsyncHTTPTransport:
        """``egress``: the caller's own ``server_url``: each new connection goes to an address the
        egress policy checked (and never through an environment proxy, which would resolve the name
        itself); the platform's gateway (refs) keeps the environment's proxy settings."""
        if self._ssl is None:  # one TLS context for all entries: building one costs ≈ 25 ms
            self._ssl = httpx.create_ssl_context()
        s = self.settings
        limits = httpx.Limits(max_connections=s.mcp_pool_connections, max_keepalive_connections=s.mcp_pool_connections,
                              keepalive_expiry=s.mcp_keepalive_seconds)
        if egress:
            transport: httpx.AsyncHTTPTransport = s.egress.transport(verify=self._ssl, limits=limits)
            return transport
        return httpx.AsyncHTTPTransport(verify=self._ssl, proxy=_env_proxy(url), limits=limits)

    def acquire(self, key: str, url: str, *, pinned_modern: bool, egress: bool = False) -> PoolEntry:
        """The entry for ``key`` (made if missing), marked in use until :meth:`release`."""
        if self.closed:
            raise RuntimeError("the MCP connection pool is closed")
        e = self._entries.get(key)
        if e is None:
            mode = MODERN if pinned_modern else "auto"
            e = PoolEntry(key, url, self.new_transport(url, egress=egress), mode, mode, egress=egress)
            self._entries[key] = e
            while len(self._entries) > self.settings.mcp_pool_max_entries:
                others = [x for x in self._entries.values() if x is not e]
                self._drop(next((x for x in others if x.users == 0), others[0]))
        else:
            self._entries.move_to_end(key)
        e.users += 1
        e.last_used = time.monotonic()
        return e

    async def release(self, e: PoolEntry) -> None:
        e.users -= 1
        e.last_used = time.monotonic()
        if e.retired and e.users == 0:
            await e.aclose()

    def _drop(self, e: PoolEntry) -> None:
        if self._entries.get(e.key) is e:
            del self._entries[e.key]
        e.retired = True
        if e.users == 0:
            task = asyncio.create_task(e.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # -- introspection (tests, bench) ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[PoolEntry]:
        return list(self._entries.values())
