"""The Streamable HTTP adapter: ``/mcp/{slug}`` (both eras) and, with a bundle's dispatcher,
``/mcp/bundles/{id}``. It reads the HTTP framing (GET stream, DELETE, POST body, JSON-RPC envelope,
protocol era, gateway session) and hands each request to the pipeline (pipeline.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from wemcp.common.bodylimit import BodyTooLarge, Disconnected, read_body
from wemcp.gateway.context import CallContext
from wemcp.gateway.pipeline import PROBE_REFUSED, is_probe
from wemcp.gateway.routes import MODERN
from wemcp.gateway.rpc import (
    Refused,
    classify,
    client_era,
    header,
    params_of,
    refuse,
    respond,
    respond_problem,
    rpc_error,
)
from wemcp.gateway.sessions import OUTSIDE_BACKLOG, ClientSession, Transport, end_session

# a bundle answers its requests itself (bundles.py): (context of the request) -> the reply's body
Dispatch = Callable[[CallContext], Awaitable[bytes]]


class StreamableHttp(Transport):
    async def endpoint(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """``/mcp/{slug}``: refusals as problem+json (413 and 408 close the connection)."""
        try:
            await self.handle(scope, receive, send, scope["path_params"]["slug"])
        except Refused as r:
            await refuse(send, r)
        except BodyTooLarge:
            limit = self.settings.mcp_max_body_bytes
            await respond_problem(send, 413, "Payload Too Large", f"the body is larger than {limit} bytes",
                                  [(b"connection", b"close")])
        except TimeoutError:
            await respond_problem(send, 408, "Request Timeout", "the request body arrived too slowly",
                                  [(b"connection", b"close")])
        except Disconnected:
            return

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any, target: str,
                     bundle: Dispatch | None = None) -> None:
        method = scope["method"]
        pipeline, hub = self.pipeline, self.hub
        pipeline.check_origin(scope)
        ctx = await pipeline.enter(scope, target, allow_probe=bundle is None)
        user_key = ctx.user_key
        if method == "GET":
            sess = hub.lookup(scope, target, user_key)
            if sess is None:
                await respond_problem(send, 405, "Method Not Allowed", "GET opens a stream only inside a 2025 session",
                                      [(b"allow", b"POST, DELETE")])
                return
            last = header(scope, b"last-event-id")
            found = sess.events.find(last) if last else None
            if found is not None:  # a client resuming a call's stream that broke (resume.py)
                await hub.resume_stream(send, receive, *found)
                return
            sess.stream = asyncio.Queue(OUTSIDE_BACKLOG)
            await hub.listen_upstream(sess, ctx)
            await hub.keepalive_stream(send, receive, sess.stream)
            return
        if method == "DELETE":
            sid = header(scope, b"mcp-session-id")
            sess = hub.sessions.get(sid or "")
            if sess is None or sess.user_key != user_key or sess.target != target:
                await respond(send, 404, rpc_error(None, -32600, "Session not found"))
                return
            end_session(hub.sessions.pop(sess.sid))
            await respond(send, 200, b"")
            return
        if method != "POST":
            await respond_problem(send, 405, "Method Not Allowed", "use POST", [(b"allow", b"GET, POST, DELETE")])
            return
        if bundle is None:
            ctx.route = pipeline.route_for(target, ctx.grant)
        else:
            await self.router.gw.bundles.check(target, ctx.identity, ctx.grant)
        raw = await read_body(scope, receive, self.settings.mcp_max_body_bytes, self.settings.mcp_body_timeout_seconds)
        await self.post(ctx, raw, send, bundle)

    async def post(self, ctx: CallContext, raw: bytes, send: Any, bundle: Dispatch | None) -> None:
        """One POSTed JSON-RPC message: requests go through the pipeline; notifications and answers
        to the server's requests end here (202)."""
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
        scope = ctx.scope
        pv = header(scope, b"mcp-protocol-version")
        client_modern, supported = client_era(pv)
        if not supported:
            await respond(send, 400, rpc_error(msg.get("id"), -32022, "Unsupported protocol version",
                                               {"supported": [MODERN], "requested": pv}))
            return
        ctx.client_modern = client_modern
        sess: ClientSession | None = None
        if not client_modern:
            if kind == "request" and msg["method"] == "initialize":
                await self.hub.initialize(send, ctx.with_request(msg, raw))
                return
            sess = self.hub.lookup(scope, ctx.target, ctx.user_key)
            if sess is None:
                if header(scope, b"mcp-session-id") is None:
                    await respond(send, 400, rpc_error(msg.get("id"), -32600,
                                                       "Bad Request: no Mcp-Session-Id; send initialize first"))
                else:
                    await respond(send, 404, rpc_error(msg.get("id"), -32600, "Session not found"))
                return
            sess.last_used = time.monotonic()
            ctx.session = sess
            ctx.extra = [(b"mcp-session-id", sess.sid.encode())]
        if sess is not None and kind == "request" and msg["method"] in ("resources/subscribe", "resources/unsubscribe"):
            uri = params_of(msg).get("uri")
            if isinstance(uri, str):  # whose GET stream hears of that resource's updates
                (sess.subscriptions.add if msg["method"] == "resources/subscribe" else sess.subscriptions.discard)(uri)
        if kind == "response" and sess is not None:  # the answer to a server's request (relay.py)
            await self.pipeline.relay.answer(sess.sid, msg)
        elif kind == "notification" and sess is not None and msg["method"] == "notifications/cancelled":
            await self.router.cancel(sess, msg)
        if kind != "request":
            await respond(send, 202, b"", headers=ctx.extra)  # notifications and replies end here
            return
        ctx.with_request(msg, raw)
        if ctx.method in PROBE_REFUSED and is_probe(scope):
            await respond(send, 200, rpc_error(ctx.req_id, -32601, "a health probe does not call tools"),
                          headers=ctx.extra)
            return
        if bundle is not None:
            await respond(send, 200, await bundle(ctx), headers=ctx.extra)
            return
        await self.pipeline.call(ctx, send)
