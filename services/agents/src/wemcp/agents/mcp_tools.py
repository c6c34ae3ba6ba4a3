"""The MCP side of the tool loop: one client per MCP server named in a request, their tools
offered to the model as functions, and the calls the model makes.

Servers by ``ref`` (a catalog slug) are reached through the gateway at ``<gateway_url>/mcp/<slug>``
with the caller's own credential (their ``Authorization`` header, which the gateway verifies again:
it takes identity from nothing else) and, in a saved agent's run, the run's signed context
(``X-WeMcp-Agent-Run``, naming the agent's servers) on every request to those servers, so the
gateway resolves the caller's own upstream keys and does not meter the agent's own calls.
Responses-style ``server_url`` servers are called directly with the headers the request gave, over
connections the platform's egress policy checks at connect time (``wemcp.common.netpolicy``): a
URL, or a name rebinding, to a non-public address is a 400 ``invalid_server_url``.

The clients are per request, but what they stand on is pooled (``mcp_pool.py``): connections, the
server's protocol era and a few seconds of ``tools/list``, per user, run scope, server and headers.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx2 as httpx
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT, UNSUPPORTED_PROTOCOL_VERSION

from wemcp.agents.config import Settings
from wemcp.agents.errors import BadGateway, BadRequest, GatewayTimeout, oai
from wemcp.agents.mcp_pool import McpPool, PoolEntry
from wemcp.common.logging import get_logger
from wemcp.common.netpolicy import EgressPolicy, EgressRefused

log = get_logger("wemcp.agents.mcp")
SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$", re.IGNORECASE)
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


@dataclass
class McpServerSpec:
    label: str
    url: str
    headers: dict[str, str]
    allowed_tools: list[str] | None
    param: str  # where it came from in the request, for error messages
    ref: str | None = None
    # Sent on every request but not part of the pool key: the run's signed context (per run).
    call_headers: dict[str, str] = field(default_factory=dict)
    pool_key: str = ""  # mcp_pool.pool_key(user, run scope, url, headers)


@dataclass
class McpCall:
    """One MCP call made during a run; reported in the completion's ``mcp_calls``."""

    round: int
    server: str
    tool: str
    arguments: Any
    status: str  # ok | error | invalid_arguments | not_allowed | timeout | unavailable
    latency_ms: float
    output: str = ""
    ref: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "server": self.server, "ref": self.ref, "tool": self.tool,
                "arguments": self.arguments, "status": self.status, "latency_ms": self.latency_ms,
                "output": self.output[:2000]}


@dataclass
class _Tool:
    spec: McpServerSpec
    name: str  # the server's name for it
    client: Client
    definition: dict[str, Any]
    entry: PoolEntry


def _status_in(exc: BaseException) -> int | None:
    """The HTTP status hidden in an exception (group) raised while connecting."""
    seen: list[BaseException] = [exc]
    while seen:
        e = seen.pop()
        if isinstance(e, httpx.HTTPStatusError):
            return e.response.status_code
        if isinstance(e, BaseExceptionGroup):
            seen.extend(e.exceptions)
        m = re.search(r"\b(40[0-9]|41[0-9]|42[0-9]|50[0-9])\b", str(e))
        if m and ("status" in str(e).lower() or "http" in str(e).lower()):
            return int(m.group(1))
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None and nxt not in seen:
                seen.append(nxt)
    return None


def _timed_out(exc: BaseException) -> bool:
    seen: list[BaseException] = [exc]
    while seen:
        e = seen.pop()
        if isinstance(e, (TimeoutError, httpx.TimeoutException)):
            return True
        if isinstance(e, BaseExceptionGroup):
            seen.extend(e.exceptions)
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None and nxt not in seen:
                seen.append(nxt)
    return False


async def check_public_url(url: str, param: str, egress: EgressPolicy) -> None:
    """Up front, for a clear 400 before the model is asked: the URL's shape and where its host
    resolves now. The connections made later are checked again when they are opened."""
    try:
        await egress.check(url)
    except EgressRefused as exc:
        raise _refused(param, exc) from None
    except ValueError as exc:
        raise oai(BadRequest, f"{param}: server_url {exc}", "invalid_server_url", param=param) from None
    except OSError:
        raise oai(BadRequest, f"{param}: cannot resolve {urlsplit(url).hostname!r}", "invalid_server_url",
                  param=param) from None


def _refused(param: str, exc: EgressRefused) -> Exception:
    return oai(BadRequest, f"{param}: {exc}; external MCP servers must be public", "invalid_server_url", param=param)


def tool_name(label: str, tool: str) -> str:
    return f"{_UNSAFE.sub('_', label)[:24]}__{_UNSAFE.sub('_', tool)}"[:64]


def _result_text(result: Any, limit: int) -> str:
    parts: list[str] = []
    for c in result.content or []:
        text = getattr(c, "text", None)
        parts.append(text if isinstance(text, str) else json.dumps(c.model_dump(mode="json", exclude_none=True)))
    if not parts and getattr(result, "structured_content", None) is not None:
        parts.append(json.dumps(result.structured_content))
    out = "\n".join(parts)
    return out if len(out) <= limit else out[:limit] + f"... [cut at {limit} characters]"


@dataclass
class McpHub:
    specs: list[McpServerSpec]
    settings: Settings
    pool: McpPool
    tools: dict[str, _Tool] = field(default_factory=dict)
    calls: list[McpCall] = field(default_factory=list)
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def __aenter__(self) -> McpHub:
        try:
            # One after another: each client's task group must close in the task that opened it.
            for spec in self.specs:
                await self._connect(spec)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self._stack.aclose()
        except Exception as e:  # a server that vanished must not turn an answer into an error
            log.info("mcp_close_failed", error=type(e).__name__)

    async def _open(self, spec: McpServerSpec, entry: PoolEntry, inner: AsyncExitStack,
                    keep_status: Any) -> tuple[Client, list[Any]]:
        """A client for this request over the entry's connections, and the server's tools (from the
        entry when it listed them less than ``mcp_tools_ttl_seconds`` ago)."""
        timeout = self.settings.mcp_timeout_seconds
        # Per request: the run's context must never ride on a pooled connection (see mcp_pool.py).
        http = httpx.AsyncClient(headers={**spec.headers, **spec.call_headers}, transport=entry.borrow(self.pool),
                                 timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)), follow_redirects=False,
                                 event_hooks={"response": [keep_status]}, trust_env=False)
        inner.push_async_callback(http.aclose)
        client = await inner.enter_async_context(
            Client(streamable_http_client(spec.url, http_client=http), read_timeout_seconds=timeout,
                   mode=entry.mode, prior_discover=entry.discover, cache=None))
        entry.learn(client)
        cached = entry.cached_tools()
        if cached is not None and _absorb(client, cached):
            entry.reused += 1
            return client, list(cached.tools)
        listed: list[Any] = []
        cursor = None
        while True:
            page = await client.list_tools(cursor=cursor)
            listed.extend(page.tools)
            cursor = page.next_cursor
            if not cursor or len(listed) > 1000:
                break
        entry.keep_tools(listed, self.settings.mcp_tools_ttl_seconds)
        return client, listed

    async def _connect(self, spec: McpServerSpec) -> None:
        timeout = self.settings.mcp_timeout_seconds
        what = f"MCP server {spec.ref!r}" if spec.ref else f"MCP server {spec.label!r} ({urlsplit(spec.url).netloc})"
        # refs go to the platform's own gateway; server_url is the caller's: egress-checked connections
        entry = self.pool.acquire(spec.pool_key, spec.url, pinned_modern=spec.ref is not None,
                                  egress=spec.ref is None)
        self._stack.push_async_callback(self.pool.release, entry)
        for attempt in (1, 2):
            # The SDK folds HTTP statuses into JSON-RPC errors; keep them to tell 404 (unknown ref) and
            # 401/403 (credentials) from other failures.
            statuses: list[int] = []

            async def keep_status(response: httpx.Response, statuses: list[int] = statuses) -> None:
                if response.status_code >= 400:
                    statuses.append(response.status_code)

            inner = AsyncExitStack()
            try:
                async with asyncio.timeout(timeout):
                    client, listed = await self._open(spec, entry, inner, keep_status)
                break
            except Exception as exc:
                await _quiet_close(inner)
                entry.invalidate(era=True)
                if attempt == 1 and spec.ref and _unsupported_version(exc):
                    entry.mode = "auto"  # a gateway without the 2026-07-28 revision: probe instead
                    continue
                if entry.refused is not None:  # a connection the egress policy refused (rebinding)
                    raise _refused(spec.param, entry.refused) from None
                status = statuses[0] if statuses else _status_in(exc)
                if spec.ref and status == 404:
                    raise oai(BadRequest, f"{spec.param}: unknown MCP server ref {spec.ref!r}: the catalog has no "
                              "such server (check the slug)", "unknown_mcp_ref", param=spec.param) from None
                if status in (401, 403):
                    raise oai(BadRequest, f"{spec.param}: {what} refused the credentials ({status})",
                              "mcp_unauthorized", param=spec.param) from None
                if status == 429:
                    raise oai(BadGateway, f"{spec.param}: {what} refused the call: quota exhausted (429)",
                              "mcp_rate_limited", param=spec.param) from None
                if status == 504 or isinstance(exc, TimeoutError) or _timed_out(exc):
                    raise oai(GatewayTimeout, f"{spec.param}: {what} did not answer within {timeout:g} s",
                              "mcp_timeout", param=spec.param) from None
                log.warning("mcp_connect_failed", server=spec.label, error=type(exc).__name__, status=status)
                raise oai(BadGateway, f"{spec.param}: cannot reach {what}"
                          + (f" (HTTP {status})" if status else f" ({type(exc).__name__})"),
                          "mcp_unavailable", param=spec.param) from None
        self._stack.push_async_callback(_quiet_close, inner)
        names = {t.name for t in listed}
        if spec.allowed_tools is not None:
            missing = [n for n in spec.allowed_tools if n not in names]
            if missing:
                raise oai(BadRequest, f"{spec.param}.allowed_tools: {what} has no tool named "
                          f"{', '.join(map(repr, missing[:5]))} (it offers {', '.join(sorted(names))[:300]})",
                          "unknown_mcp_tool", param=f"{spec.param}.allowed_tools")
        for t in listed:
            if spec.allowed_tools is not None and t.name not in spec.allowed_tools:
                continue
            name = tool_name(spec.label, t.name)
            if name in self.tools:
                raise oai(BadRequest, f"{spec.param}: two MCP servers share the label {spec.label!r}; "
                          "give one a server_label", "duplicate_mcp_label", param=spec.param)
            schema = t.input_schema if isinstance(t.input_schema, dict) else {"type": "object"}
            self.tools[name] = _Tool(spec, t.name, client, {"type": "function", "function": {
                "name": name, "description": (t.description or t.title or t.name)[:1024], "parameters": schema}},
                entry)

    def definitions(self) -> list[dict[str, Any]]:
        return [t.definition for t in self.tools.values()]

    def owns(self, name: str) -> bool:
        return name in self.tools

    async def call(self, round_no: int, name: str, raw_arguments: str | None) -> str:
        """Runs one tool call and returns what the model reads back. Never raises for the tool's
        own failures: the model gets the error text and may try again."""
        tool = self.tools[name]
        label, ref = tool.spec.label, tool.spec.ref
        t0 = time.perf_counter()

        def record(status: str, output: str, args: Any) -> str:
            self.calls.append(McpCall(round_no, label, tool.name, args, status,
                                      round((time.perf_counter() - t0) * 1000, 2), output, ref))
            return output

        try:
            args = json.loads(raw_arguments) if raw_arguments and raw_arguments.strip() else {}
            if not isinstance(args, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            return record("invalid_arguments", f"error: the arguments for {name} are not a valid JSON object "
                          f"({str(exc)[:120]}); call the tool again with a JSON object matching its schema",
                          raw_arguments)
        try:
            result = await tool.client.call_tool(tool.name, args,
                                                 read_timeout_seconds=self.settings.mcp_timeout_seconds)
        except MCPError as exc:
            # A JSON-RPC error (HTTP 401/403/404 from the gateway end up here too: a disabled server,
            # a revoked key) — the cached tool list may be what is wrong; the next request lists again.
            tool.entry.invalidate()
            if exc.code == REQUEST_TIMEOUT:
                return record("timeout", f"error: {tool.name} did not answer within "
                              f"{self.settings.mcp_timeout_seconds:g} s", args)
            if exc.code == CONNECTION_CLOSED:
                log.warning("mcp_call_failed", server=label, tool=tool.name, error=exc.error.message[:200])
                return record("unavailable", f"error: {tool.name} could not be called ({exc.error.message[:300]})",
                              args)
            return record("error", f"error: {tool.name} failed: {exc.error.message[:500]}", args)
        except Exception as exc:
            tool.entry.invalidate()
            if _timed_out(exc):
                return record("timeout", f"error: {tool.name} did not answer within "
                              f"{self.settings.mcp_timeout_seconds:g} s", args)
            log.warning("mcp_call_failed", server=label, tool=tool.name, error=type(exc).__name__)
            return record("unavailable", f"error: {tool.name} could not be called ({type(exc).__name__})", args)
        text = _result_text(result, self.settings.tool_output_max_chars)
        if result.is_error:
            return record("error", f"error: {text}", args)
        return record("ok", text, args)


def _absorb(client: Client, listing: Any) -> bool:
    """Hands a cached tool list to a new client as if it had listed the tools itself, so calls need
    no ``tools/list`` first (the SDK lists before a call of a tool it has not seen, to validate the
    output schema and mirror ``x-mcp-header`` arguments). The SDK's own response cache cannot do
    this: servers built on it mark ``tools/list`` ``ttlMs: 0`` by default. False if the SDK no longer
    has the hook; the caller then lists (slower, still correct; the pool tests would fail)."""
    absorb = getattr(client.session, "_absorb_tool_listing", None)
    if absorb is None:
        return False
    absorb(listing.model_copy(), complete=True)
    return True


def _unsupported_version(exc: BaseException) -> bool:
    seen: list[BaseException] = [exc]
    while seen:
        e = seen.pop()
        if isinstance(e, MCPError) and e.code == UNSUPPORTED_PROTOCOL_VERSION:
            return True
        if isinstance(e, BaseExceptionGroup):
            seen.extend(e.exceptions)
    return False


async def _quiet_close(stack: AsyncExitStack) -> None:
    try:
        await stack.aclose()
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError):
            raise
        log.info("mcp_close_failed", error=type(exc).__name__)


def gateway_url_for(base: str, slug: str) -> str:
    return f"{base.rstrip('/')}/mcp/{quote(slug, safe='')}"
