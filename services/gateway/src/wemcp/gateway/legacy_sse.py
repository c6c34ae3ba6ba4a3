"""The 2024-11-05 SSE transport adapter: ``GET /mcp/{slug}/sse`` opens the stream (``event:
endpoint``; the stream *is* the gateway session) and ``POST /mcp/{slug}/messages?session_id=``
carries the client's messages (202); each request goes through the pipeline (pipeline.py) and its
reply travels on the stream."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import orjson

from wemcp.common import sse
from wemcp.common.bodylimit import BodyTooLarge, Disconnected, read_body
from wemcp.common.logging import get_logger
from wemcp.gateway.context import CallContext
from wemcp.gateway.rpc import (
    JSON,
    Refused,
    classify,
    refuse,
    respond,
    respond_problem,
    rpc_error,
)
from wemcp.gateway.sessions import ClientSession, Transport
from wemcp.gateway.upstream import final_response, parse_messages

if TYPE_CHECKING:
    from wemcp.gateway.mcp import McpRouter

log = get_logger("wemcp.gateway.mcp")
SSE_VERSION = "2024-11-05"


class LegacySse(Transport):
    def __init__(self, router: McpRouter) -> None:
        super().__init__(router)
        self._tasks: set[asyncio.Task[None]] = set()  # replies in progress

    async def stream(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """``GET /mcp/{slug}/sse``: identify, route, then the session's stream until the client goes."""
        slug = scope["path_params"]["slug"]
        try:
            self.pipeline.check_origin(scope)
            ctx = await self.pipeline.enter(scope, slug)
            self.pipeline.route_for(slug, ctx.grant)
        except Refused as r:
            await refuse(send, r)
            return
        hub = self.hub
        sid = hub.new_sid()
        queue: asyncio.Queue[bytes] = asyncio.Queue(256)
        hub.sessions[sid] = ClientSession(sid, slug, ctx.user_key, ctx.identity, SSE_VERSION, {}, {}, queue)
        endpoint = f"/mcp/{slug}/messages?session_id={sid}".encode()
        try:
            await hub.keepalive_stream(send, receive, queue, sse.encode(endpoint, event="endpoint"))
        finally:
            hub.sessions.pop(sid, None)

    async def messages(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """``POST /mcp/{slug}/messages?session_id=``: one message of the session's client."""
        slug = scope["path_params"]["slug"]
        qs = scope.get("query_string", b"").decode("latin-1")
        sid = next((p[11:] for p in qs.split("&") if p.startswith("session_id=")), "")
        try:
            self.pipeline.check_origin(scope)
        except Refused as r:
            await respond_problem(send, r.status, r.title, r.detail)
            return
        sess = self.hub.sessions.get(sid)
        if sess is None or sess.target != slug or sess.queue is None:
            await respond_problem(send, 404, "Not Found", "unknown session")
            return
        try:
            raw = await read_body(scope, receive, self.settings.mcp_max_body_bytes,
                                  self.settings.mcp_body_timeout_seconds)
        except BodyTooLarge:
            await respond_problem(send, 413, "Payload Too Large", "the body is too large")
            return
        except (TimeoutError, Disconnected):
            await respond_problem(send, 408, "Request Timeout", "the body arrived too slowly")
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
            ctx = CallContext(scope, sess.target, sess.identity, sess.user_key, session=sess).with_request(msg, raw)
            task = asyncio.create_task(self._reply(ctx))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "response":  # the answer to a server's request (relay.py)
            await self.pipeline.relay.answer(sess.sid, msg)
        elif msg["method"] == "notifications/cancelled":
            await self.router.cancel(sess, msg)

    async def _reply(self, ctx: CallContext) -> None:
        """Answer one request of a legacy SSE session: the reply goes onto the session's stream."""
        sess = ctx.session
        assert sess is not None and sess.queue is not None
        collected: list[dict[str, Any]] = []

        async def collect(m: dict[str, Any]) -> None:
            if m["type"] == "http.response.start":
                collected.append({"headers": dict(m.get("headers", []))})
            elif m.get("body"):
                collected[-1].setdefault("chunks", []).append(m["body"])

        req_id = ctx.req_id
        try:
            ctx.route = self.pipeline.route_for(sess.target, None)
            if ctx.method == "initialize":
                await self.hub.initialize(None, ctx, sess.queue, existing=sess)
                return
            await self.pipeline.call(ctx, collect)
            if not collected:
                return
            ctype = collected[0]["headers"].get(b"content-type", JSON).decode()
            body = b"".join(collected[0].get("chunks", []))
            reply = final_response(parse_messages(body, ctype), req_id)
            out = orjson.dumps(reply) if reply is not None else rpc_error(req_id, -32603, "no reply")
        except Refused as r:
            out = rpc_error(req_id, -32000, r.detail)
        except Exception as exc:
            log.warning("sse_reply_failed", server=sess.target, error=type(exc).__name__)
            out = rpc_error(req_id, -32603, "internal error")
        with contextlib.suppress(asyncio.QueueFull):
            sess.queue.put_nowait(out)

