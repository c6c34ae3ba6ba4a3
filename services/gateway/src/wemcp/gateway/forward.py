"""The forward step of the call path: one request to the upstream and its reply back to the client.

When the eras match the client's bytes go out untouched and the upstream's reply streams back
unbuffered (JSON or SSE); when they differ the reply is translated (a 2025 upstream's result gets
the fields a 2026-07-28 client requires; a 2026-07-28-only upstream's result loses those a 2025
client must not see). Calls during which the server may ask the client something go through the
relay (relay.py). Every tools/call ends in ``Pipeline.record``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from wemcp.common.logging import get_logger
from wemcp.gateway.context import CallContext
from wemcp.gateway.relay import Channel, landed
from wemcp.gateway.rpc import respond, rpc_error
from wemcp.gateway.upstream import (
    LEGACY_VERSION,
    UpstreamError,
    final_response,
    legacy_result,
    modernize,
    parse_messages,
)

if TYPE_CHECKING:
    from wemcp.gateway.pipeline import Pipeline

log = get_logger("wemcp.gateway.mcp")


def translated(ctx: CallContext) -> bool:
    """Whether the upstream answers in the other era than the client's: a 2026-07-28 client of a
    2025-only upstream, or a 2025 client of a 2026-07-28-only one."""
    route = ctx.route
    assert route is not None
    return (route.modern is False) if ctx.client_modern else (route.modern is True and route.legacy is not True)


def outcome_of(body: bytes) -> tuple[str, int | None]:
    """(status, error code) of a whole JSON reply, for the call event."""
    if b'"error"' not in body:
        return "ok", None
    code = None
    with contextlib.suppress(Exception):
        code = orjson.loads(body).get("error", {}).get("code")
    return "error", code


class Forwarder:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.upstream = pipeline.gw.upstream

    async def forward(self, ctx: CallContext, send: Any, on_sent: Callable[[Any, int], None] | None) -> None:
        pipeline = self.pipeline
        route, resolved, sess, tool = ctx.route, ctx.resolved, ctx.session, ctx.tool
        assert route is not None and resolved is not None
        if ctx.relayed:
            ahead = ctx.ahead
            channel = Channel(send, ctx.extra, sess.queue if sess is not None else None, decision=ahead,
                              slug=route.slug, events=sess.events if sess is not None and sess.queue is None else None,
                              priming=sess is not None and sess.protocol_version >= "2025-11-25")

            def finish(status: str, code: int | None, nout: int) -> None:
                if tool is not None:
                    if ahead is not None:
                        ctx.decision = channel.decided
                    pipeline.record(ctx, status, code, nout)
            if await pipeline.relay.call(channel, ctx, finish, on_sent):
                return
        up = self.upstream
        req_id, client_modern = ctx.req_id, ctx.client_modern
        try:
            resp = await up.send(route, resolved, ctx.user_key, ctx.msg, ctx.raw, client_modern=client_modern,
                                 client_caps=sess.capabilities if sess else None,
                                 client_info=sess.client_info if sess else None,
                                 legacy_version=sess.protocol_version if sess else LEGACY_VERSION,
                                 on_sent=on_sent)
        except UpstreamError as exc:
            await self._land(ctx)
            body = rpc_error(req_id, exc.code, f"upstream: {exc}")
            if tool is not None:
                pipeline.record(ctx, "timeout" if exc.timeout else "error", exc.code, len(body))
            await respond(send, 200, body, headers=ctx.extra)
            return
        await self._land(ctx)
        ctype = resp.headers.get("content-type", "application/json")
        if translated(ctx):
            try:
                body = await up.read(resp)
                reply = final_response(parse_messages(body, ctype), req_id)
            except Exception:
                reply = None
            if reply is None:
                body = rpc_error(req_id, -32002, "upstream: no JSON-RPC reply")
            else:
                if isinstance(reply.get("result"), dict):
                    reply["result"] = (modernize(ctx.method, reply["result"]) if client_modern
                                       else legacy_result(reply["result"]))
                body = orjson.dumps(reply)
            if tool is not None:
                pipeline.record(ctx, "error" if "error" in (reply or {"error": 1}) else "ok", None, len(body))
            await respond(send, 200, body, headers=ctx.extra)
            return
        out = [(b"content-type", ctype.encode("latin-1")), *ctx.extra]
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
                outcome, code = outcome_of(body)
                out.append((b"content-length", str(nout).encode()))
                await send({"type": "http.response.start", "status": status, "headers": out})
                await send({"type": "http.response.body", "body": body})
        except (TimeoutError, OSError, Exception) as exc:  # upstream broke mid-stream
            outcome = "timeout" if isinstance(exc, asyncio.TimeoutError) else "error"
            log.warning("upstream_stream_broken", server=route.slug, error=type(exc).__name__)
        finally:
            resp.release()
        if tool is not None:
            pipeline.record(ctx, outcome, code, nout)

    @staticmethod
    async def _land(ctx: CallContext) -> None:
        """The quota decision taken alongside the call, once the upstream answered: its headers go
        on the reply (relay.landed)."""
        if ctx.ahead is not None:
            ctx.decision, more = await landed(ctx.ahead, ctx.slug)
            ctx.extra = ctx.extra + more
