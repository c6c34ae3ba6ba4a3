"""Gateway sessions of 2025 clients (Streamable HTTP ``Mcp-Session-Id``, and the legacy SSE stream
that *is* its session): the registry, ``initialize``, idle reaping, the SSE streams a session keeps
open (keep-alives, resumption after ``Last-Event-ID``), and what an upstream says outside any call
(list_changed, resources/updated), relayed from the pooled upstream session's own ``GET`` stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from wemcp.common.identity import Identity
from wemcp.common.logging import get_logger
from wemcp.common.sse import SseParser, aiter_events
from wemcp.gateway.context import CallContext
from wemcp.gateway.resume import SessionEvents, StreamLog
from wemcp.gateway.rpc import HANDSHAKE_VERSIONS, header, params_of, respond, rpc_error, rpc_result
from wemcp.gateway.upstream import LEGACY_VERSION, UpstreamError

if TYPE_CHECKING:
    from wemcp.gateway.mcp import McpRouter
    from wemcp.gateway.pipeline import Pipeline

log = get_logger("wemcp.gateway.mcp")
# what an upstream says outside any call that reaches 2025 sessions' GET streams
OUTSIDE_CALLS = frozenset({"notifications/resources/updated", "notifications/resources/list_changed",
                           "notifications/tools/list_changed", "notifications/prompts/list_changed"})
MAX_OUTSIDE_EVENT = 16 * 1024 * 1024  # one message of an upstream's GET stream, at most
OUTSIDE_BACKLOG = 256  # messages waiting on a session's GET stream; more are dropped


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


def end_session(sess: ClientSession) -> None:
    """End the session's open SSE streams (so the server can shut down, or a disabled server's
    sessions go)."""
    for q in (sess.queue, sess.stream):
        if q is not None:
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(b"")  # ends the SSE stream


class SessionHub:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.gw = pipeline.gw
        self.sessions: dict[str, ClientSession] = {}
        self.sid_prefix = ""  # this replica's id + "." when several run (replicas.py): ids name their owner
        self._reaper: asyncio.Task[None] | None = None
        self._listeners: dict[int, asyncio.Task[None]] = {}  # upstream sessions' GET streams

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap(), name="gateway-session-reaper")

    async def stop(self) -> None:
        for sess in list(self.sessions.values()):
            end_session(sess)  # open SSE streams end, so the server can shut down
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(BaseException):
                await self._reaper
        for task in list(self._listeners.values()):
            task.cancel()

    async def _reap(self) -> None:
        idle = self.gw.settings.mcp_session_idle_seconds
        while True:
            await asyncio.sleep(min(idle / 4, 30.0))
            cutoff = time.monotonic() - idle
            for sid in [s for s, c in self.sessions.items() if c.last_used < cutoff and c.queue is None]:
                self.sessions.pop(sid, None)

    def end_target(self, target: str) -> None:
        """Every session of ``target`` ends (its server was disabled)."""
        for sid in [s for s, c in self.sessions.items() if c.target == target]:
            end_session(self.sessions.pop(sid))

    def new_sid(self) -> str:
        return self.sid_prefix + secrets.token_hex(16)

    def lookup(self, scope: dict[str, Any], target: str, user_key: str) -> ClientSession | None:
        """The session a request names (``Mcp-Session-Id``), when it is this caller's on this server."""
        sid = header(scope, b"mcp-session-id")
        if not sid:
            return None
        sess = self.sessions.get(sid)
        # A session id is bound to its caller and server: another user's id is simply unknown.
        if sess is None or sess.user_key != user_key or sess.target != target:
            return None
        return sess

    # -- initialize -------------------------------------------------------------------------------------
    async def initialize(self, send: Any, ctx: CallContext, queue: asyncio.Queue[bytes] | None = None,
                         existing: ClientSession | None = None) -> ClientSession | None:
        """A 2025 client's ``initialize``, answered by the gateway with a gateway session (the
        server's own capabilities and serverInfo). ``existing``: the session of a legacy SSE stream,
        opened with the stream; its initialize fills in what the client negotiated (no second session)."""
        msg, params = ctx.msg, ctx.params
        asked = str(params.get("protocolVersion") or LEGACY_VERSION)
        version = asked if asked in HANDSHAKE_VERSIONS else LEGACY_VERSION
        try:
            info = await self.pipeline.server_info(ctx, version, params.get("capabilities")
                                                   if isinstance(params.get("capabilities"), dict) else None)
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
            sid = self.new_sid()
            sess = ClientSession(sid, ctx.target, ctx.user_key, ctx.identity, version,
                                 dict(params.get("capabilities") or {}), dict(params.get("clientInfo") or {}), queue)
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

    # -- SSE streams a session keeps open ---------------------------------------------------------------
    async def keepalive_stream(self, send: Any, receive: Any, queue: asyncio.Queue[bytes] | None = None,
                               first: bytes | None = None) -> None:
        """An SSE stream: ``first`` (the legacy endpoint event), then queued messages, and a comment
        line every ``mcp_keepalive_seconds`` so idle proxies keep it open. Ends when the client
        goes away or ``b""`` is queued (server disabled, session deleted)."""
        queue = queue if queue is not None else asyncio.Queue(1)

        def gone() -> None:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(b"")

        every = self.gw.settings.mcp_keepalive_seconds
        async with event_stream(send, receive, gone):
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

    async def resume_stream(self, send: Any, receive: Any, log: StreamLog, seen: int) -> None:
        """The events of ``log`` after event ``seen``, then the rest of the call as it comes (keep-alive
        comments meanwhile); ends after the call's reply, or when the client goes away."""
        gone = asyncio.Event()
        every = self.gw.settings.mcp_keepalive_seconds
        async with event_stream(send, receive, gone.set):
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

    # -- messages outside any call: the upstream session's GET stream, to the client sessions' ----------
    async def listen_upstream(self, sess: ClientSession, ctx: CallContext) -> None:
        """Have the pooled upstream session this 2025 session talks through listen on its own GET
        stream (one listener per upstream session), so list_changed and resources/updated reach the
        client sessions on it. Nothing when the upstream is spoken to statelessly or refuses."""
        route = self.gw.routes.get(sess.target)
        if route is None or not route.routable or route.kind in ("openapi", "local") or \
                (route.modern is True and route.legacy is not True):
            return
        up = self.gw.upstream
        ctx.route = route
        try:
            resolved = await self.pipeline.resolve(ctx)
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
        client: Any = up.remote if upstream.remote else up.http
        headers = {**up.session_headers(upstream), "accept": "text/event-stream",
                   "mcp-protocol-version": upstream.protocol_version}
        if upstream.session_id:
            headers["mcp-session-id"] = upstream.session_id
        try:
            resp = await client.request("GET", upstream.url, b"", headers)
            try:
                if resp.status != 200 or "text/event-stream" not in resp.headers.get("content-type", ""):
                    return
                async for event in aiter_events(resp.content.iter_any(), SseParser(MAX_OUTSIDE_EVENT)):
                    self.outside(upstream, event.data)
            finally:
                resp.release()
        except Exception as exc:  # the stream ends; the next client GET listens again
            log.info("upstream_get_stream_ended", error=type(exc).__name__)

    def outside(self, upstream: Any, data: bytes) -> None:
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


@contextlib.asynccontextmanager
async def event_stream(send: Any, receive: Any, on_gone: Callable[[], None]) -> AsyncIterator[None]:
    """A GET stream's SSE answer for the length of the block: started on entry, with a watch for the
    client going away (``on_gone`` runs once it has); on exit the watch ends and the answer is closed.
    A send that fails because the client went (``OSError``) ends the block quietly."""

    async def watch_disconnect() -> None:
        with contextlib.suppress(Exception):
            while (await receive())["type"] != "http.disconnect":
                pass
        on_gone()

    watcher = asyncio.create_task(watch_disconnect())
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no")]})
    try:
        yield
    except OSError:
        pass
    finally:
        watcher.cancel()
    with contextlib.suppress(Exception):
        await send({"type": "http.response.body", "body": b""})


class Transport:
    """What a transport adapter (streamable.py, legacy_sse.py) works with: the router, its pipeline and
    session hub, the settings."""

    def __init__(self, router: McpRouter) -> None:
        self.router = router
        self.pipeline = router.pipeline
        self.hub = router.hub
        self.settings = router.gw.settings
