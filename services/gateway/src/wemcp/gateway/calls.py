"""``mcp.call.completed``, off the hot path.

The request handler only puts a small record on a bounded in-memory queue (no await, no I/O); one
background task builds the events and publishes them to JetStream with ``Nats-Msg-Id`` =
``event_id`` (dedup). It lets events gather for ``linger`` seconds (5 ms) after the first one and
sends what gathered together: one socket write and one wake-up of the NATS server for a burst of
calls instead of one per call (a call's event is a few milliseconds later; calls are not slowed).
One message per event, without waiting for each acknowledgement: every
message carries its own reply subject under one inbox subscription, and the acknowledgements are
matched as they arrive (no future, timer or task per event). The gateway owns no database, so there
is no outbox: what can be lost is bounded and counted —

- the queue holds at most ``capacity`` events; when it is full (NATS down for long) new events are
  dropped and counted in ``dropped`` (the call itself is never slowed or failed);
- at most ``max_unacked`` events wait for their acknowledgement; one refused, unanswered within
  ``ack_timeout`` or not sent is published again (``retries`` times, with backoff; dedup by
  ``event_id`` makes a repeat harmless), then counted in ``failed``;
- on shutdown the queue and the unacknowledged events are drained for up to ``drain_seconds``; a
  crash loses what was queued or unacknowledged.

Quota is unaffected by any loss: the decision is counted in Redis before the call is forwarded;
the events feed usage history, request logs and counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import orjson

from wemcp.common.events.calls import McpCallCompleted
from wemcp.common.logging import get_logger

log = get_logger("wemcp.gateway.calls")
SUBJECT, STREAM = McpCallCompleted.subject, McpCallCompleted.stream


@dataclass(slots=True)
class CallRecord:
    user_id: UUID | None
    server_slug: str
    method: str
    tool: str | None
    key_source: str
    metered: bool
    in_agent_run: bool
    status: str
    error_code: int | None
    latency_ms: float
    request_bytes: int
    response_bytes: int
    agent_id: UUID | None = None


@dataclass(slots=True)
class _Unacked:
    event_id: str
    data: bytes
    server: str
    attempt: int = 0
    deadline: float = 0.0


class CallRecorder:
    def __init__(self, capacity: int = 10_000, retries: int = 5, max_unacked: int = 256,
                 drain_seconds: float = 5.0, ack_timeout: float = 5.0, linger: float = 0.005) -> None:
        self.queue: asyncio.Queue[CallRecord] = asyncio.Queue(capacity)
        self.linger = linger
        self.retries = retries
        self.max_unacked = max_unacked
        self.drain_seconds = drain_seconds
        self.ack_timeout = ack_timeout
        self.published = 0
        self.dropped = 0
        self.failed = 0
        self._nc: Any = None
        self._inbox = ""
        self._sub: Any = None
        self._tokens = itertools.count(1)
        self._unacked: dict[str, _Unacked] = {}
        self._room = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._main: list[asyncio.Task[None]] = []

    def record(self, rec: CallRecord) -> None:
        try:
            self.queue.put_nowait(rec)
        except asyncio.QueueFull:
            self.dropped += 1

    def start(self, js: Any) -> None:
        """Publishes on ``js``'s connection (a nats-py ``JetStreamContext``)."""
        self._nc = js._nc
        self._main = [asyncio.create_task(self._run(), name="gateway-call-events"),
                      asyncio.create_task(self._sweep(), name="gateway-call-events-acks")]

    async def stop(self) -> None:
        if not self._main:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_seconds
        while (not self.queue.empty() or self._unacked) and loop.time() < deadline:  # noqa: ASYNC110 (bounded)
            await asyncio.sleep(0.02)
        for t in [*self._main, *self._tasks]:
            t.cancel()
        for t in [*self._main, *self._tasks]:
            with contextlib.suppress(BaseException):
                await t
        self._main = []
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _run(self) -> None:
        nc = self._nc
        self._inbox = nc.new_inbox()
        self._sub = await nc.subscribe(self._inbox + ".*", cb=self._on_ack)
        queue = self.queue
        while True:
            rec: CallRecord | None = await queue.get()
            if self.linger > 0:
                await asyncio.sleep(self.linger)  # let a burst gather: one write for all of it
            while rec is not None:
                while len(self._unacked) >= self.max_unacked:
                    self._room.clear()
                    await self._room.wait()
                event_id, data = event_json(rec)
                await self._send(_Unacked(event_id, data, rec.server_slug))
                rec = queue.get_nowait() if not queue.empty() else None

    async def _send(self, u: _Unacked) -> None:
        token = str(next(self._tokens))
        u.deadline = asyncio.get_running_loop().time() + self.ack_timeout
        self._unacked[token] = u
        try:
            await self._nc.publish(SUBJECT, u.data, reply=f"{self._inbox}.{token}",
                                   headers={"Nats-Msg-Id": u.event_id, "Nats-Expected-Stream": STREAM})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._unacked.pop(token, None) is not None:
                self._again(u, type(exc).__name__)

    async def _on_ack(self, msg: Any) -> None:
        u = self._unacked.pop(msg.subject.rpartition(".")[2], None)
        if u is None:
            return  # answered after its time-out: already sent again (dedup keeps one)
        data = msg.data
        if not data or b'"error"' in data:  # a refusal, or "no responders" (a status, no body)
            self._again(u, "refused")
        else:
            self.published += 1
        if len(self._unacked) < self.max_unacked:
            self._room.set()

    def _again(self, u: _Unacked, why: str) -> None:
        if u.attempt >= self.retries:
            self.failed += 1
            log.warning("call_event_lost", server=u.server, error=why)
            if len(self._unacked) < self.max_unacked:
                self._room.set()
            return
        u.attempt += 1
        task = asyncio.create_task(self._later(u, min(0.2 * 2 ** (u.attempt - 1), 5.0)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _later(self, u: _Unacked, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._send(u)

    async def _sweep(self) -> None:
        """Events whose acknowledgement did not come within ``ack_timeout`` are sent again."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(self.ack_timeout / 4, 0.5))
            now = loop.time()
            for token in [t for t, u in self._unacked.items() if u.deadline < now]:
                u = self._unacked.pop(token, None)
                if u is not None:
                    self._again(u, "TimeoutError")


_SCHEMA_VERSION = McpCallCompleted.model_fields["schema_version"].default


def event_json(rec: CallRecord) -> tuple[str, bytes]:
    """The ``mcp.call.completed`` event of a record as JSON (the fields of :class:`McpCallCompleted`,
    which the consumers parse), written directly: building and dumping the pydantic model was a
    noticeable share of the gateway's CPU per call. Returns (event_id, body)."""
    event_id = uuid4()
    body = orjson.dumps({
        "event_id": event_id, "occurred_at": datetime.now(UTC), "schema_version": _SCHEMA_VERSION,
        "user_id": rec.user_id, "server_slug": rec.server_slug, "agent_id": rec.agent_id, "method": rec.method,
        "tool": rec.tool, "key_source": rec.key_source, "metered": rec.metered, "in_agent_run": rec.in_agent_run,
        "status": rec.status, "error_code": rec.error_code, "latency_ms": round(rec.latency_ms, 3),
        "request_bytes": rec.request_bytes, "response_bytes": rec.response_bytes}, option=orjson.OPT_UTC_Z)
    return str(event_id), body
