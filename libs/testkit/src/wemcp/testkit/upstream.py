"""Real MCP servers for the gateway's tests and benches (the official SDK's MCPServer on loopback).

``mode="modern"``: a 2026-07-28-only server (``ModernOnly``). ``mode="both"``: the SDK serves both
eras (2026-07-28 stateless by the ``MCP-Protocol-Version``
header, the 2025 revisions with ``Mcp-Session-Id``). ``mode="legacy"``: a 2025-only server, as
older SDKs are: a 2026-07-28 request is refused with HTTP 400 and a JSON-RPC error, so clients and
the gateway fall back to the initialize handshake.

Tools: ``echo``, ``add``, ``whoami`` (reports the credential it received: the ``X-Api-Key`` header
or, for hosted servers behind the deployer bridge, the ``X-WeMcp-Env-API_KEY`` header and the bridge
credential ``X-WeMcp-Assertion``, the names of all ``X-WeMcp-Env-*`` headers it received, and
the server's name), ``slow``, ``wait_cancel`` (records its cancellation; ``cancellations`` lists them)
and ``polled`` (ends its SSE stream before answering, when served ``resumable``). With ``interactive=True`` (served
with ``json_response=False``, so the server can talk during a call) also tools that ask the client
mid-call — ``summarise`` (sampling), ``confirm`` (form elicitation), ``roots`` (roots/list) — and
``count`` (progress and log notifications). They use the SDK's resolvers, so the server asks in
whichever way the request's era calls for: a standalone server-to-client request on the call's stream
(2025 revisions) or an ``InputRequiredResult`` the client answers by retrying (2026-07-28).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from mcp import MCPDeprecationWarning
from mcp.server.mcpserver import Context, Elicit, ListRoots, MCPServer, Resolve, Sample
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import CreateMessageResult, JSONRPCMessage, ListRootsResult, SamplingMessage, TextContent
from pydantic import BaseModel

from wemcp.devstack.testing import serve_app


class Confirmation(BaseModel):
    name: str
    ok: bool


def ask_model(topic: str) -> Sample:
    return Sample([SamplingMessage(role="user", content=TextContent(type="text", text=f"summarise {topic}"))],
                  max_tokens=64)


def ask_user(topic: str) -> Elicit[Confirmation]:
    return Elicit(f"go ahead with {topic}?", Confirmation)


def ask_roots() -> ListRoots:
    return ListRoots()


def add_interactive_tools(mcp: MCPServer) -> None:
    @mcp.tool()
    def summarise(topic: str, reply: Annotated[CreateMessageResult, Resolve(ask_model)]) -> str:
        """Asks the client's model (sampling/createMessage)."""
        text = reply.content.text if isinstance(reply.content, TextContent) else "?"
        return f"{reply.model} said: {text}"

    @mcp.tool()
    def confirm(topic: str, answer: Annotated[Confirmation, Resolve(ask_user)]) -> str:
        """Asks the user (elicitation/create, form mode)."""
        return f"{topic}: {answer.name} said {'yes' if answer.ok else 'no'}"

    @mcp.tool()
    def roots(listing: Annotated[ListRootsResult, Resolve(ask_roots)]) -> str:
        """Asks the client for its roots (roots/list)."""
        return ",".join(str(r.uri) for r in listing.roots)

    @mcp.tool()
    async def count(n: int, ctx: Context) -> str:
        """Reports progress n times (and logs), then answers."""
        for i in range(1, n + 1):
            await ctx.report_progress(i, n, f"step {i}")
        with warnings.catch_warnings():  # logging is deprecated in 2026-07-28; 2025 clients still get it
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await ctx.info(f"counted to {n}")
        return f"counted {n}"


def build_server(name: str = "upstream", *, interactive: bool = False) -> MCPServer:
    mcp = MCPServer(name)
    if interactive:
        add_interactive_tools(mcp)

    @mcp.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @mcp.tool()
    def whoami(ctx: Context) -> str:
        """The credential this call carried (for key-resolution tests)."""
        req = ctx.request_context.request
        headers = getattr(req, "headers", {}) or {}
        return json.dumps({"api_key": headers.get("x-api-key") or headers.get("x-wemcp-env-api_key"),
                           "session": headers.get("mcp-session-id"), "server": name,
                           "env": sorted(k[12:] for k in headers if k.lower().startswith("x-wemcp-env-")),
                           "assertion": headers.get("x-wemcp-assertion")})

    @mcp.tool()
    async def slow(seconds: float) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(min(seconds, 30))
        return "done"

    @mcp.tool()
    async def wait_cancel(seconds: float) -> str:
        """Sleep; a cancellation (notifications/cancelled) is recorded (see ``cancellations``)."""
        try:
            await asyncio.sleep(min(seconds, 30))
        except asyncio.CancelledError:
            CANCELLED.append(f"{name}:wait_cancel")
            raise
        return "not cancelled"

    @mcp.tool()
    def cancellations() -> str:
        """The calls of this process that were cancelled."""
        return json.dumps(CANCELLED)

    @mcp.tool()
    async def polled(ctx: Context) -> str:
        """Ends the call's SSE stream before answering (SSE polling: served with an event store, the
        answer comes on the client's reconnection; a no-op over stdio)."""
        await ctx.close_sse_stream()
        await asyncio.sleep(0.2)
        return "polled"

    @mcp.prompt()
    def greet(who: str) -> str:
        """A prompt with one argument."""
        return f"Say hello to {who}."

    @mcp.resource("note://today")
    def today() -> str:
        """A static text resource."""
        return "nothing planned"

    @mcp.resource("note://{day}")
    def note(day: str) -> str:
        """A templated resource."""
        return f"nothing planned on {day}"

    return mcp


async def _bad_request(send: Any, message: str) -> None:
    """HTTP 400 with a JSON-RPC error (-32600), as a server refuses a protocol revision it does not speak."""
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}).encode()
    await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


class ModernOnly:
    """ASGI wrapper: refuses the 2025 revisions (``initialize`` and every request without the
    2026-07-28 header), like a server written for 2026-07-28 alone."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            version = dict(scope.get("headers", [])).get(b"mcp-protocol-version", b"")
            if not version.startswith(b"2026"):
                await _bad_request(send, "Bad Request: this server speaks 2026-07-28 only")
                return
        await self.app(scope, receive, send)


class LegacyOnly:
    """ASGI wrapper: refuses the 2026-07-28 era like a 2025-only server."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for k, v in scope.get("headers", []):
                if k == b"mcp-protocol-version" and v.startswith(b"2026"):
                    await _bad_request(send, "Bad Request: Unsupported protocol version")
                    return
        await self.app(scope, receive, send)


CANCELLED: list[str] = []  # calls of this process cancelled by their client


class Events(EventStore):
    """Every stream's events in memory, for replay after ``Last-Event-ID`` (resumable servers)."""

    def __init__(self) -> None:
        self.events: list[tuple[StreamId, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        self.events.append((stream_id, message))
        return str(len(self.events))

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        if not last_event_id.isdigit() or not 0 < int(last_event_id) <= len(self.events):
            return None
        stream = self.events[int(last_event_id) - 1][0]
        for n, (sid, message) in enumerate(self.events[int(last_event_id):], int(last_event_id) + 1):
            if sid == stream and message is not None:
                await send_callback(EventMessage(message, str(n)))
        return stream


@contextlib.asynccontextmanager
async def serve_upstream(mode: str = "both", *, json_response: bool = True, port: int | None = None,
                         name: str = "upstream", interactive: bool = False,
                         resumable: bool = False) -> AsyncIterator[str]:
    """Serve a test server on loopback; yields its Streamable HTTP URL (``.../mcp``). ``resumable``:
    with an event store and a retry hint of 300 ms (SSE polling: ``polled`` ends its stream early)."""
    options: dict[str, Any] = {"event_store": Events(), "retry_interval": 300} if resumable else {}
    app: Any = build_server(name, interactive=interactive).streamable_http_app(json_response=json_response,
                                                                               **options)
    if mode == "legacy":
        app = LegacyOnly(app)
    elif mode == "modern":
        app = ModernOnly(app)
    async with serve_app(app, port, lifespan="on") as url:
        yield url + "/mcp"


@contextlib.asynccontextmanager
async def hosted_bridge(slug: str, *, interactive: bool = False, argv: list[str] | None = None,
                        root: Path | None = None) -> AsyncIterator[str]:
    """This module's server (or ``argv``, run in ``root``) over stdio (its name: ``hosted``) behind the
    deployer's bridge, the way hosted servers run; yields the bridge's endpoint for ``slug`` (deploy
    it with protocol_versions ``["2025-11-25", "2026-07-28"]``, as the deployer reports them)."""
    from wemcp.testkit.hosted import host, local_bridge

    here = root or Path(__file__).parent
    bridge = local_bridge()
    argv = argv or [sys.executable, str(here / "upstream.py"), "hosted",
                    *(["--interactive"] if interactive else [])]
    await bridge.start()
    try:
        yield host(bridge, slug, argv, here)
    finally:
        await bridge.close()


if __name__ == "__main__":  # the same server over stdio, as a hosted server runs behind the deployer's bridge
    build_server(sys.argv[1] if len(sys.argv) > 1 else "upstream",
                 interactive="--interactive" in sys.argv).run("stdio")
