"""What a server says to the client *during* a call: its requests (``sampling/createMessage``,
``elicitation/create``, ``roots/list``) and notifications (progress, logging), relayed between hosted
servers and clients of either era. See docs/services/gateway.md ("Server-initiated requests").

A call here is ``tools/call``, ``prompts/get`` or ``resources/read``. How the server's questions
travel depends on the two eras:

- **2025 client, 2025 upstream** (pooled upstream session): the upstream sends standalone requests
  on the SSE reply of the call. Each gets a *gateway id* (unique in the process: pooled upstream
  sessions are shared by a user's client sessions, and every upstream session numbers its requests
  from 0) and goes to the client on the call's stream — the POST's SSE reply, or the session's
  stream for the legacy SSE transport. The client POSTs its answer with its session id; it is
  accepted only from the session it was asked on, and posted to the upstream session with the
  upstream's own id.
- **2025 client, 2026-07-28 upstream**: the upstream answers ``InputRequiredResult``. The gateway
  asks the client each embedded request as a standalone request (gateway ids again), waits for the
  answers and retries the call upstream with ``inputResponses`` and the echoed ``requestState``.
- **2026-07-28 client, 2025 upstream**: a 2026 client takes no standalone requests. The gateway
  answers the call with an ``InputRequiredResult`` carrying the upstream's question and a gateway
  ``requestState`` token, and keeps the upstream call open ("parked", in this process, bound to the
  user and the server) until the client retries with ``inputResponses`` and that token; the answers
  go to the upstream and the call goes on, on the retry's response. Unanswered for
  ``wait_seconds``: the upstream gets an error answer and the call ends.
- **2026-07-28 on both sides**: nothing to do; the router forwards both legs untouched.

Notifications are relayed on the call's stream as they come (a 2026 client's retry gets the
progress of the parked call with its own progress token).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from wemcp.common.logging import get_logger
from wemcp.common.sse import SseParser, SseTooLarge, aiter_events
from wemcp.gateway.context import CallContext
from wemcp.gateway.h1client import H1Error
from wemcp.gateway.resume import SessionEvents, StreamLog
from wemcp.gateway.upstream import (
    LEGACY_VERSION,
    LegacySession,
    Streaming,
    UpstreamError,
    legacy_result,
    modernize,
    parse_messages,
)

log = get_logger("wemcp.gateway.relay")
RELAYED = frozenset({"tools/call", "prompts/get", "resources/read"})
STATE_PREFIX = "wemcp-rs."  # gateway requestState tokens (2026 clients of 2025 upstreams)
MAX_ROUNDS = 10  # InputRequiredResult rounds the gateway drives for a 2025 client (the SDKs' default)
MAX_EVENT = 16 * 1024 * 1024
MAX_RETRY_MS = 60_000  # an upstream's retry hint is capped at this
MAX_RECONNECTS = 3  # reconnections in a row to an upstream that closes its stream without a new event
Finish = Callable[[str, "int | None", int], None]  # (status, error code, response bytes): the call event


def _rpc_error(req_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "error": {"code": code, "message": message}}


@dataclass
class Closed:
    """The upstream ended a call's SSE stream before its reply, after an event id (the spec's SSE
    polling, SEP-1699): it expects the client back after ``retry`` ms with ``Last-Event-ID``."""

    retry: int | None


async def iter_sse(resp: Any, parser: SseParser | None = None) -> AsyncIterator[dict[str, Any]]:
    """The JSON-RPC messages of an SSE response, as they arrive (comments, pings and events that are
    not a JSON object skipped; a last event without its blank line still counts); ``parser`` keeps
    the stream's last event id and retry hint (wemcp.common.sse)."""
    p = parser if parser is not None else SseParser(MAX_EVENT)
    try:
        async for event in aiter_events(resp.content.iter_any(), p, dispatch_incomplete=True):
            try:
                msg = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(msg, dict):
                yield msg
    except SseTooLarge:
        raise UpstreamError("the server sent an SSE event over 16 MiB", -32002) from None


def _resume_from(parser: SseParser) -> str | None:
    """The event id to resume a stream from (None: nothing to resume from)."""
    return parser.last_id or None


def _kind(m: dict[str, Any]) -> str:
    if isinstance(m.get("method"), str):
        return "request" if "id" in m else "notification"
    return "response"


async def landed(ahead: asyncio.Future[Any], slug: str) -> tuple[Any, list[tuple[bytes, bytes]]]:
    """A quota decision taken alongside the call, and the rate-limit headers for its reply. Refused
    means the caller's last calls came through other gateways faster than the margin (see the
    ratelimit client): this call was already forwarded, so its answer goes out; it was not counted."""
    decision = await ahead
    if not decision.allowed:
        log.warning("quota_refused_after_forwarding", server=slug, reason=decision.reason)
    return decision, [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in decision.headers().items()]


class Channel:
    """Where the messages of one call go: the POST's response (plain JSON when nothing comes before
    the reply, SSE once something does), or a legacy SSE session's stream."""

    def __init__(self, send: Any, extra: list[tuple[bytes, bytes]], queue: asyncio.Queue[bytes] | None = None,
                 modern: bool = False, decision: asyncio.Future[Any] | None = None, slug: str = "",
                 events: SessionEvents | None = None, priming: bool = False) -> None:
        self.send, self.extra, self.queue, self.modern = send, extra, queue, modern
        self.started = False
        # a 2025 session's streams (resume.py): each event gets an id and is kept for a reconnecting
        # client; ``priming``: the stream opens with an empty event carrying the first id (2025-11-25)
        self.events, self.priming = events, priming
        self.log: StreamLog | None = None
        self.detached = False  # this response ended early (``pause``): the rest goes only to the log
        self.nout = 0
        # a quota decision taken alongside the call (QuotaClient.decide_ahead): its headers go on the
        # reply, so it is awaited just before the reply starts; ``decided`` is it, once known
        self.pending, self.slug = decision, slug
        self.decided: Any = None

    async def _land(self) -> None:
        fut, self.pending = self.pending, None
        if fut is not None:
            self.decided, more = await landed(fut, self.slug)
            self.extra = self.extra + more

    async def _start(self, retry: int | None = None) -> None:
        await self._land()
        self.started = True
        await self.send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"), *self.extra]})
        if self.events is not None:
            self.log = self.events.open()
            if self.priming:
                await self._write(self.log.add(b"", retry=retry))

    async def message(self, body: bytes, final: bool = False) -> None:
        self.nout += len(body)
        if self.queue is not None:
            await self.queue.put(body)
            return
        if not self.started:
            await self._start()
        await self._write(self.log.add(body, final=final) if self.log is not None
                          else b"event: message\ndata: " + body + b"\n\n")

    async def pause(self, retry: int | None) -> None:
        """The upstream ended the call's stream early (SSE polling): a client that can resume — a
        2025-11-25 session's stream, with event ids and a priming event — gets the same: the upstream's
        retry hint, then the end of this response; its ``GET`` with ``Last-Event-ID`` picks up the
        rest from the log (resume.py) while the gateway resumes upstream. Other clients keep their
        stream open and see nothing of it."""
        if self.queue is not None or self.events is None or not self.priming or self.detached:
            return
        if not self.started:
            await self._start(retry)
        elif retry is not None:
            await self._write(b"retry: %d\n\n" % retry)
        self.detached = True
        with contextlib.suppress(OSError):
            await self.send({"type": "http.response.body", "body": b""})

    async def _write(self, chunk: bytes) -> None:
        if self.detached:
            return
        # a client gone mid-stream: the rest of the call is kept in the log for its reconnection
        with contextlib.suppress(OSError):
            await self.send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def final(self, reply: dict[str, Any]) -> tuple[str, int | None]:
        """Send the call's reply; returns (status, error code) for the call event."""
        body = orjson.dumps(reply)
        err = reply.get("error")
        outcome = ("error", err.get("code") if isinstance(err, dict) else None) if err is not None else ("ok", None)
        if self.queue is not None or self.started:
            await self.message(body, final=True)
            if self.started and not self.detached:
                with contextlib.suppress(OSError):
                    await self.send({"type": "http.response.body", "body": b""})
            return outcome
        self.nout += len(body)
        await self._land()
        await self.send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *self.extra]})
        await self.send({"type": "http.response.body", "body": body})
        return outcome


@dataclass
class Waiting:
    """A server's request relayed to a 2025 client, awaiting the answer of session ``sid``: posted
    to ``upstream`` under ``upstream_id``, or handed to ``future`` (the gateway drives the rounds)."""

    sid: str
    upstream: LegacySession | None = None
    upstream_id: Any = None
    future: asyncio.Future[dict[str, Any]] | None = None


@dataclass
class Parked:
    """A 2025 upstream's call waiting for a 2026-07-28 client's retry."""

    user_key: str
    slug: str
    stream: Streaming
    messages: AsyncIterator[dict[str, Any] | Closed]
    finish: Finish
    method: str
    name: Any  # the tool, prompt or resource called: a retry must name the same
    asked: dict[str, Any] = field(default_factory=dict)  # input key -> the upstream's request id
    progress_token: Any = None
    timer: asyncio.TimerHandle | None = None
    created: float = field(default_factory=time.monotonic)


class Relay:
    def __init__(self, upstream: Any, wait_seconds: float = 120.0) -> None:
        self.up = upstream
        self.wait_seconds = wait_seconds  # how long a server's question waits for the client's answer
        self.waiting: dict[str, Waiting] = {}
        self.parked: dict[str, Parked] = {}
        self.state_tag = ""  # this replica's id + "." when several run (replicas.py): tokens name their owner
        self._prefix = "wemcp-" + secrets.token_hex(4) + "-"
        self._n = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    def _gid(self) -> str:
        self._n += 1
        return f"{self._prefix}{self._n}"

    async def stop(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # bounded: an upstream that does not answer cannot hold us
                for token in list(self.parked):
                    await self._expire(token, "the gateway is shutting down")
        for parked in self.parked.values():
            parked.stream.resp.release()
        self.parked.clear()
        for w in self.waiting.values():
            if w.future is not None and not w.future.done():
                w.future.cancel()
        self.waiting.clear()

    # -- answers from 2025 clients --------------------------------------------------------------------
    async def answer(self, sid: str, msg: dict[str, Any]) -> bool:
        """A client's JSON-RPC response to a relayed request; False when it answers nothing this
        session was asked (unknown, already answered, or asked of another session)."""
        gid = msg.get("id")
        if not isinstance(gid, str):
            return False
        w = self.waiting.get(gid)
        if w is None or w.sid != sid:
            return False
        del self.waiting[gid]
        if w.future is not None:
            if not w.future.done():
                w.future.set_result(msg)
            return True
        assert w.upstream is not None
        reply = {"jsonrpc": "2.0", "id": w.upstream_id}
        if "error" in msg:
            reply["error"] = msg["error"]
        else:
            reply["result"] = msg.get("result")
        await self.post(w.upstream, reply)
        return True

    async def post(self, sess: LegacySession, reply: dict[str, Any]) -> None:
        """An answer to the upstream session's own request, or a notification on that session (the
        upstream acknowledges with 202)."""
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                   "mcp-protocol-version": sess.protocol_version, **self.up.session_headers(sess)}
        if sess.session_id:
            headers["mcp-session-id"] = sess.session_id
        try:
            resp = await self.up.post(sess.url, orjson.dumps(reply), headers, remote=sess.remote)
            await self.up.read(resp)
            if resp.status >= 400:
                log.info("relay_answer_refused", status=resp.status)
        except UpstreamError as exc:
            log.info("relay_answer_failed", error=str(exc))

    # -- one call ------------------------------------------------------------------------------------------
    async def call(self, channel: Channel, ctx: CallContext, finish: Finish,
                   on_sent: Callable[[LegacySession, int], None] | None = None) -> bool:
        """A call of a client that can be asked something (a 2025 session, or a 2026 client of a
        2025 upstream), keys resolved and quota decided (``ctx``, pipeline.py). Sends the reply (or the
        question) on ``channel``; ``finish`` records the call once it is over. False (nothing sent):
        not for the relay — 2026-07-28 on both sides, or the upstream's era unknown because it is
        unreachable (the router reports that)."""
        up = self.up
        route, resolved, user_key, msg, raw = ctx.route, ctx.resolved, ctx.user_key, ctx.msg, ctx.raw
        client_modern, sess = ctx.client_modern, ctx.session
        assert route is not None and resolved is not None
        try:
            modern = await up.modern_for(route, resolved, client_modern)
        except UpstreamError:
            return False
        if client_modern and modern:
            return False
        if modern:
            await self._drive(channel, route, resolved, user_key, msg, sess, finish)
            return True
        try:
            resp = await up.send(route, resolved, user_key, msg, raw, client_modern=client_modern,
                                 client_caps=sess.capabilities if sess else None,
                                 client_info=sess.client_info if sess else None,
                                 legacy_version=sess.protocol_version if sess else LEGACY_VERSION, stream=True,
                                 on_sent=on_sent)
        except UpstreamError as exc:
            finish("timeout" if exc.timeout else "error", exc.code, 0)
            await channel.final(_rpc_error(msg["id"], exc.code, f"upstream: {exc}"))
            return True
        if not isinstance(resp, Streaming):  # a plain JSON reply (id already restored)
            try:
                body = await up.read(resp)
                reply = parse_messages(body, "application/json")[0]
            except Exception:
                reply = _rpc_error(msg["id"], -32002, "upstream: no JSON-RPC reply")
            if client_modern:
                reply = _modern(msg["method"], reply)
            status, code = await channel.final(reply)
            finish(status, code, channel.nout)
            return True
        if client_modern:
            params = msg.get("params") or {}
            meta = params.get("_meta") or {}
            parked = Parked(user_key, route.slug, resp, self.messages(resp), finish, msg["method"],
                            _name(params), progress_token=meta.get("progressToken"))
            await self._pump(parked, channel, msg)
            return True
        await self._relay_stream(channel, resp, msg, sess, finish)
        return True

    async def _relay_stream(self, channel: Channel, resp: Streaming, msg: dict[str, Any], sess: Any,
                            finish: Finish) -> None:
        """2025 on both sides: the upstream's reply stream, relayed with the server's requests
        renamed to gateway ids."""
        mine: list[str] = []
        status: str = "error"
        code: int | None = -32002
        try:
            async for m in self.messages(resp):
                if isinstance(m, Closed):  # the upstream will go on after a reconnection (polling)
                    await channel.pause(m.retry)
                    continue
                kind = _kind(m)
                if kind == "response":
                    if m.get("id") != resp.uid:
                        continue
                    m["id"] = msg["id"]
                    status, code = await channel.final(m)
                    return
                if kind == "request":
                    gid = self._gid()
                    self.waiting[gid] = Waiting(sess.sid, resp.session, m["id"])
                    mine.append(gid)
                    m = {**m, "id": gid}
                await channel.message(orjson.dumps(m))
            status, code = await channel.final(_rpc_error(msg["id"], -32002, "upstream: the stream ended "
                                                                             "without a reply"))
        except UpstreamError as exc:
            status, code = await channel.final(_rpc_error(msg["id"], exc.code, f"upstream: {exc}"))
        except (TimeoutError, OSError, Exception) as exc:  # upstream broke, or the client went away
            log.warning("relay_stream_broken", error=type(exc).__name__)
            status = "timeout" if isinstance(exc, TimeoutError) else "error"
        finally:
            resp.resp.release()
            for gid in mine:
                self.waiting.pop(gid, None)
            finish(status, code, channel.nout)

    # -- a 2025 upstream's SSE answer, resumed when the upstream ends it early ------------------------
    async def messages(self, resp: Streaming) -> AsyncIterator[dict[str, Any] | Closed]:
        """The messages of a 2025 upstream's SSE answer to a call. When the upstream ends the stream
        before its reply, having sent an event id (SSE polling, SEP-1699), this yields ``Closed``,
        waits the upstream's retry hint and reconnects — ``GET`` on the upstream session with
        ``Last-Event-ID`` — and goes on with what it replays and what follows, as often as the
        upstream closes (up to ``MAX_RECONNECTS`` reconnections in a row that bring nothing new).
        ``resp.resp`` is always the response being read (its holder releases it)."""
        parser = SseParser(MAX_EVENT)  # one for every reconnection: the last event id carries over
        idle = 0
        while True:
            before = _resume_from(parser)
            async for m in iter_sse(resp.resp, parser):
                yield m
            last_id = _resume_from(parser)
            if last_id is None:
                return  # nothing to resume from: the stream just ended
            idle = idle + 1 if last_id == before else 0
            if idle > MAX_RECONNECTS:
                return
            retry = min(parser.retry, MAX_RETRY_MS) if parser.retry is not None else None
            yield Closed(retry)
            await asyncio.sleep((retry if retry is not None else 1000) / 1000)
            again = await self._reconnect(resp.session, last_id)
            if again is None:
                return
            resp.resp.release()
            resp.resp = again

    async def _reconnect(self, sess: LegacySession, last_id: str) -> Any:
        """``GET`` with ``Last-Event-ID`` on an upstream session: its SSE response, or None."""
        client = self.up.remote if sess.remote else self.up.http
        headers = {**self.up.session_headers(sess), "accept": "text/event-stream",
                   "mcp-protocol-version": sess.protocol_version, "last-event-id": last_id}
        if sess.session_id:
            headers["mcp-session-id"] = sess.session_id
        try:
            resp = await client.request("GET", sess.url, b"", headers)
        except (TimeoutError, H1Error) as exc:
            log.info("upstream_resume_failed", error=type(exc).__name__)
            return None
        if resp.status != 200 or "text/event-stream" not in resp.headers.get("content-type", ""):
            log.info("upstream_resume_refused", status=resp.status)
            resp.release()
            return None
        return resp

    # -- 2025 client, 2026-07-28 upstream: the gateway drives InputRequiredResult rounds ----------------
    async def _drive(self, channel: Channel, route: Any, resolved: Any, user_key: str, msg: dict[str, Any],
                     sess: Any, finish: Finish) -> None:
        up, req_id = self.up, msg["id"]
        params = dict(msg.get("params") or {})
        current = msg
        status, code = "error", None
        try:
            for _ in range(MAX_ROUNDS + 1):
                resp = await up.send(route, resolved, user_key, current, None, client_modern=False,
                                     client_caps=sess.capabilities, client_info=sess.client_info)
                reply = await self._reply(resp, req_id, channel)
                result = reply.get("result")
                if not (isinstance(result, dict) and result.get("resultType") == "input_required"):
                    if isinstance(result, dict):
                        legacy_result(result)  # the 2025 client's own revision
                    status, code = await channel.final(reply)
                    return
                requests = result.get("inputRequests") or {}
                answers: dict[str, Any] = {}
                if requests:
                    replies = await asyncio.wait_for(asyncio.gather(*(
                        self._ask(channel, sess.sid, r) for r in requests.values())), self.wait_seconds)
                    for key, answer in zip(requests, replies, strict=True):
                        if "error" in answer:  # the client refused: the call fails with its error
                            status, code = await channel.final({"jsonrpc": "2.0", "id": req_id,
                                                                "error": answer["error"]})
                            return
                        answers[key] = answer.get("result")
                else:
                    await asyncio.sleep(0.05)  # only requestState: the server asks to be polled
                params = {k: v for k, v in params.items() if k not in ("inputResponses", "requestState")}
                if answers:
                    params["inputResponses"] = answers
                if result.get("requestState") is not None:
                    params["requestState"] = result["requestState"]
                current = {**msg, "params": params}
            status, code = await channel.final(_rpc_error(req_id, -32603, f"the server asked more than "
                                                                          f"{MAX_ROUNDS} rounds of questions"))
        except TimeoutError:
            status, code = "timeout", -32001
            await channel.final(_rpc_error(req_id, -32001, "the client did not answer the server's request in time"))
        except UpstreamError as exc:
            status, code = ("timeout" if exc.timeout else "error"), exc.code
            await channel.final(_rpc_error(req_id, exc.code, f"upstream: {exc}"))
        except (OSError, Exception) as exc:  # the client went away
            log.warning("relay_rounds_broken", error=type(exc).__name__)
        finally:
            finish(status, code, channel.nout)

    async def _reply(self, resp: Any, req_id: Any, channel: Channel) -> dict[str, Any]:
        """The upstream's reply to one leg; its notifications go to the client on the way."""
        ctype = resp.headers.get("content-type", "")
        reply: dict[str, Any] | None = None
        try:
            if "text/event-stream" in ctype:
                async for m in iter_sse(resp):
                    kind = _kind(m)
                    if kind == "response" and m.get("id") == req_id:
                        reply = m
                    elif kind == "notification":
                        await channel.message(orjson.dumps(m))
            else:
                body = await resp.read()
                msgs = parse_messages(body, "application/json") if body.strip() else []
                reply = next((m for m in msgs if m.get("id") == req_id), None)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            reply = None
        finally:
            resp.release()
        return reply or _rpc_error(req_id, -32002, "upstream: no JSON-RPC reply")

    async def _ask(self, channel: Channel, sid: str, request: dict[str, Any]) -> dict[str, Any]:
        gid = self._gid()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[gid] = Waiting(sid, future=fut)
        try:
            await channel.message(orjson.dumps({"jsonrpc": "2.0", "id": gid, "method": request.get("method"),
                                                "params": request.get("params") or {}}))
            return await fut
        finally:
            self.waiting.pop(gid, None)

    # -- 2026-07-28 client, 2025 upstream: park the upstream call until the client retries -------------
    def resumable(self, msg: dict[str, Any]) -> str | None:
        params = msg.get("params")
        token = params.get("requestState") if isinstance(params, dict) else None
        return token if isinstance(token, str) and token.startswith(STATE_PREFIX) else None

    async def resume(self, channel: Channel, token: str, ctx: CallContext) -> None:
        """A 2026 client's retry carrying a gateway ``requestState``: its answers go to the parked
        upstream call, which goes on, on this request's response."""
        route, user_key, msg = ctx.route, ctx.user_key, ctx.msg
        assert route is not None
        parked = self.parked.get(token)
        if parked is None or (parked.user_key, parked.slug, parked.method, parked.name) != \
                (user_key, route.slug, msg["method"], _name(msg.get("params") or {})):
            await channel.final(_rpc_error(msg["id"], -32602, "unknown or expired requestState: call again "
                                                              "without it"))
            return
        del self.parked[token]
        if parked.timer is not None:
            parked.timer.cancel()
        params = msg.get("params") or {}
        raw_answers = params.get("inputResponses")
        answers: dict[str, Any] = raw_answers if isinstance(raw_answers, dict) else {}
        for key, upstream_id in parked.asked.items():
            if key in answers:
                await self.post(parked.stream.session, {"jsonrpc": "2.0", "id": upstream_id, "result": answers[key]})
            else:
                await self.post(parked.stream.session, {"jsonrpc": "2.0", "id": upstream_id, "error": {
                    "code": -32603, "message": "the client did not answer"}})
        parked.asked = {}
        raw_meta = params.get("_meta")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        await self._pump(parked, channel, msg, meta.get("progressToken"))

    async def _pump(self, parked: Parked, channel: Channel, msg: dict[str, Any], token: Any = None) -> None:
        """Relay the parked call's stream to this request until the reply (the call is over) or the
        server's next question (the call is parked again)."""
        token = token if token is not None else parked.progress_token
        status: str = "error"
        code: int | None = -32002
        state: str | None = None
        try:
            async for m in parked.messages:
                if isinstance(m, Closed):  # resumed upstream; a 2026 client's response stays open
                    continue
                kind = _kind(m)
                if kind == "response":
                    if m.get("id") != parked.stream.uid:
                        continue
                    m["id"] = msg["id"]
                    status, code = await channel.final(_modern(parked.method, m))
                    break
                if kind == "notification":
                    p = m.get("params")
                    if m.get("method") == "notifications/progress" and isinstance(p, dict) and token is not None:
                        m = {**m, "params": {**p, "progressToken": token}}
                    await channel.message(orjson.dumps(m))
                    continue
                # the server asks: the client answers by retrying with this token
                key = f"q{len(parked.asked) + 1}"
                parked.asked[key] = m["id"]
                state = STATE_PREFIX + self.state_tag + secrets.token_urlsafe(24)
                self.parked[state] = parked
                parked.timer = asyncio.get_running_loop().call_later(
                    self.wait_seconds, lambda s: self._spawn(self._expire(s, "the client did not answer")), state)
                await channel.final({"jsonrpc": "2.0", "id": msg["id"], "result": {
                    "resultType": "input_required", "requestState": state,
                    "inputRequests": {key: {"method": m.get("method"), "params": m.get("params") or {}}}}})
                return
            else:
                status, code = await channel.final(_rpc_error(msg["id"], -32002, "upstream: the stream ended "
                                                                                 "without a reply"))
        except UpstreamError as exc:
            status, code = ("timeout" if exc.timeout else "error"), exc.code
            await channel.final(_rpc_error(msg["id"], exc.code, f"upstream: {exc}"))
        except (TimeoutError, OSError, Exception) as exc:  # upstream broke, or the client went away
            log.warning("relay_stream_broken", error=type(exc).__name__)
            if state is not None and state in self.parked:  # the question never reached the client
                await self._expire(state, "the client went away")
                return
            status = "timeout" if isinstance(exc, TimeoutError) else "error"
        parked.stream.resp.release()
        parked.finish(status, code, channel.nout)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(self, token: str, why: str) -> None:
        parked = self.parked.pop(token, None)
        if parked is None:
            return
        if parked.timer is not None:
            parked.timer.cancel()
        for upstream_id in parked.asked.values():
            await self.post(parked.stream.session, {"jsonrpc": "2.0", "id": upstream_id,
                                                     "error": {"code": -32001, "message": why}})
        with contextlib.suppress(Exception):
            await parked.messages.aclose()  # type: ignore[attr-defined]
        parked.stream.resp.release()
        parked.finish("timeout", -32001, 0)
        log.info("relay_parked_expired", server=parked.slug)


def _name(params: dict[str, Any]) -> Any:
    return params.get("name", params.get("uri"))


def _modern(method: str, reply: dict[str, Any]) -> dict[str, Any]:
    """A 2025 upstream's reply to a call, for a 2026-07-28 client (``resultType`` is required)."""
    if isinstance(reply.get("result"), dict):
        modernize(method, reply["result"])
    return reply
