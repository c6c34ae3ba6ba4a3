"""The MCP router: ``/mcp/{slug}`` (Streamable HTTP, both eras), ``/mcp/{slug}/sse`` (legacy SSE),
``/mcp/bundles/{id}`` (several servers as one, tools named ``<slug>__<tool>``).

A thin forwarder written as raw ASGI endpoints: it parses the JSON-RPC message only to read what it
must (method, id, tool name), decides identity, key, quota, then forwards the client's own bytes
when the eras match and streams the upstream's reply back unbuffered. See docs/services/gateway.md.

This module only assembles the parts; each has its module:

- pipeline.py: the call path once (identify → route → resolve keys → decide quota → forward →
  record) over a typed :class:`~wemcp.gateway.context.CallContext` (context.py);
- forward.py: the forward step (the upstream leg, era translation); relay.py: calls during which
  the server asks the client something;
- the transport adapters: streamable.py (Streamable HTTP), legacy_sse.py (2024-11-05 SSE),
  bundles.py (bundles); rest.py (REST try-it-out) calls the pipeline too;
- sessions.py: gateway sessions of 2025 clients, their SSE streams, messages outside any call;
- rpc.py: JSON-RPC and ASGI helpers.

Clients of the 2025 revisions get a *gateway* session (``Mcp-Session-Id`` minted here, bound to the
caller and the server); it multiplexes onto pooled upstream sessions (see upstream.py), or onto
stateless 2026-07-28 requests when the upstream speaks that era. Clients of 2026-07-28 need no
session at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wemcp.gateway.bundles import BundleEndpoint
from wemcp.gateway.legacy_sse import LegacySse
from wemcp.gateway.pipeline import Pipeline
from wemcp.gateway.relay import Relay
from wemcp.gateway.routes import Route
from wemcp.gateway.rpc import Refused, params_of
from wemcp.gateway.sessions import ClientSession, SessionHub
from wemcp.gateway.streamable import StreamableHttp
from wemcp.gateway.upstream import CAPS_META, INFO_META

if TYPE_CHECKING:
    from wemcp.gateway.wiring import Mcp


class McpRouter:
    """The router's parts, and its raw ASGI endpoints (wiring.py installs them)."""

    def __init__(self, gw: Mcp) -> None:
        self.gw = gw
        self.relay = Relay(gw.upstream, gw.settings.mcp_upstream_timeout_seconds)  # server → client, mid-call
        self.pipeline = Pipeline(gw, self.relay)
        self.hub = SessionHub(self.pipeline)
        self.streamable_http = StreamableHttp(self)
        self.legacy_sse = LegacySse(self)
        self.bundles = BundleEndpoint(self)

    # -- the endpoints ------------------------------------------------------------------------------------
    async def streamable(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.streamable_http.endpoint(scope, receive, send)

    async def sse(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.legacy_sse.stream(scope, receive, send)

    async def sse_messages(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.legacy_sse.messages(scope, receive, send)

    async def bundle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.bundles.endpoint(scope, receive, send)

    # -- state ----------------------------------------------------------------------------------------------
    @property
    def sessions(self) -> dict[str, ClientSession]:
        return self.hub.sessions

    @property
    def sid_prefix(self) -> str:
        return self.hub.sid_prefix

    @sid_prefix.setter
    def sid_prefix(self, prefix: str) -> None:
        self.hub.sid_prefix = prefix

    @property
    def inflight(self) -> dict[tuple[str, Any], tuple[Any, int]]:
        return self.pipeline.inflight

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.hub.start()

    async def stop(self) -> None:
        await self.hub.stop()
        await self.relay.stop()

    def on_route_change(self, route: Route, subject: str) -> None:
        self.gw.upstream.retire(route.slug)
        if subject == "server.disabled":
            self.hub.end_target(route.slug)

    async def cancel(self, sess: ClientSession, msg: dict[str, Any]) -> None:
        """A 2025 client cancelled one of its requests: the upstream session carrying it is told, under
        the id the upstream saw (the bridge passes it on to the stdio child that runs it). A request
        this session has not in flight (finished, unknown, another session's) is ignored."""
        params = params_of(msg)
        rid = params.get("requestId")
        if not isinstance(rid, (str, int)) or isinstance(rid, bool):
            return  # not a request id at all
        where = self.pipeline.inflight.get((sess.sid, rid))
        if where is None:
            return
        upstream, uid = where
        note: dict[str, Any] = {"requestId": uid}
        if isinstance(params.get("reason"), str):
            note["reason"] = params["reason"][:500]
        await self.relay.post(upstream, {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": note})


# re-exported for type checkers of callers
__all__ = ["CAPS_META", "INFO_META", "McpRouter", "Refused"]
