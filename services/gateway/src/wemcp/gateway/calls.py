"""``mcp.call.completed``, off the hot path.

The request handler only puts a small tuple on a bounded in-memory queue (no await, no I/O); one
background task builds the events and publishes them to JetStream with ``Nats-Msg-Id`` =
``event_id`` (dedup), many in flight at once. The gateway owns no database, so there is no outbox:
what can be lost is bounded and counted —

- the queue holds at most ``capacity`` events; when it is full (NATS down for long) new events are
  dropped and counted in ``dropped`` (the call itself is never slowed or failed);
- a publish that fails is retried (``retries`` times, with backoff) while the process lives;
- on shutdown the queue is drained for up to ``drain_seconds``; a crash loses what was queued.

Quota is unaffected by any loss: the decision is counted in Redis before the call is forwarded;
the events feed usage history, request logs and counters.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from wemcp.common.events.calls import McpCallCompleted
from wemcp.common.logging import get_logger

log = get_logger("wemcp.gateway.calls")


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


class CallRecorder:
    def __init__(self, capacity: int = 10_000, retries: int = 5, concurrency: int = 64,
                 drain_seconds: float = 5.0) -> None:
        self.queue: asyncio.Queue[CallRecord] = asyncio.Queue(capacity)
        self.retries = retries
        self.drain_seconds = drain_seconds
        self.published = 0
        self.dropped = 0
        self.failed = 0
        self._js: Any = None
        self._task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._inflight: set[asyncio.Task[None]] = set()

    def record(self, rec: CallRecord) -> None:
        try:
            self.queue.put_nowait(rec)
        except asyncio.QueueFull:
            self.dropped += 1

    def start(self, js: Any) -> None:
        self._js = js
        self._task = asyncio.create_task(self._run(), name="gateway-call-events")

    async def stop(self) -> None:
        if self._task is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_seconds
        while (not self.queue.empty() or self._inflight) and loop.time() < deadline:  # noqa: ASYNC110 (bounded)
            await asyncio.sleep(0.02)
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        for t in list(self._inflight):
            t.cancel()

    async def _run(self) -> None:
        while True:
            rec = await self.queue.get()
            await self._slots.acquire()
            task = asyncio.create_task(self._publish(rec))
            self._inflight.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()

    async def _publish(self, rec: CallRecord) -> None:
        # our own well-typed values: construct without re-validating them (serialising is the same)
        event = McpCallCompleted.model_construct(
            user_id=rec.user_id, server_slug=rec.server_slug, agent_id=rec.agent_id, method=rec.method,
            tool=rec.tool, key_source=rec.key_source, metered=rec.metered,  # type: ignore[arg-type]
            in_agent_run=rec.in_agent_run, status=rec.status, error_code=rec.error_code,  # type: ignore[arg-type]
            latency_ms=round(rec.latency_ms, 3), request_bytes=rec.request_bytes, response_bytes=rec.response_bytes)
        data = event.model_dump_json().encode()
        headers = {"Nats-Msg-Id": str(event.event_id)}
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                await self._js.publish(McpCallCompleted.subject, data, stream="CALLS", headers=headers, timeout=5)
                self.published += 1
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt == self.retries:
                    self.failed += 1
                    log.warning("call_event_lost", server=rec.server_slug, error=type(exc).__name__)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
