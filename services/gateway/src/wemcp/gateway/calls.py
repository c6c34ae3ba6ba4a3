"""Call events (``mcp.call.batch``), off the hot path, and never lost to a broker outage.

The request handler only appends a small record to an in-memory list (no await, no I/O). One
background task gathers the records for ``linger`` seconds after the first one and publishes them as
one :class:`~wemcp.common.events.calls.McpCallsCompleted` JetStream message (at most ``max_calls``
calls and ``max_bytes`` of JSON, well under NATS' max_payload), ``Nats-Msg-Id`` = the batch's
``event_id``. The JSON is written directly with orjson (building pydantic models was a noticeable
share of the gateway's CPU per call).

One batch is in flight at a time; the calls of the next one gather while it waits for its
acknowledgement (the batch grows with the round trip). What cannot be published goes to the
durable :class:`~wemcp.gateway.spool.Spool` on local disk, byte for byte:

- NATS disconnected: batches gather for ``spool_linger`` (or up to the size cap) and are appended
  to the spool;
- refused, or no acknowledgement within ``ack_timeout`` after ``retries`` more tries: appended;
- the next batch reaches its cap while one is still in flight: appended (so memory holds at most one
  unacknowledged batch and the calls gathering for the next);
- while the spool holds anything, new batches are appended behind it (one order: the spool's).

A replayer publishes the spool's batches in order whenever NATS is connected (``replay_window``
acknowledgements outstanding), and deletes a segment once every batch in it is acknowledged. A
repeat (a batch spooled after its acknowledgement was lost, a segment partly replayed before a
restart) has the same bytes and msg id: JetStream drops it within its duplicate window and the
consumers' idempotency key (the batch's ``event_id``) beyond it.

Bounds and losses, all counted (``stats()``, OpenTelemetry ``wemcp.gateway.calls``):

- spool full (``max_bytes`` on disk): the batch is dropped; one ``call_events_dropped`` warning per
  episode (and one ``call_events_dropping_ended`` with the total when an append succeeds again);
  calls are served as always;
- in memory at most ``capacity`` calls wait (only reached if the disk stalls): beyond, dropped;
- SIGTERM (``stop()``): gathered and in-flight batches are published for up to ``drain_seconds``,
  the rest appended to the spool; nothing is lost;
- SIGKILL: what is only in memory is lost — the calls gathered for the next batch (at most one
  batch: ``linger`` or one acknowledgement round trip of calls, ``spool_linger`` while NATS is
  down, never more than ``max_calls``). The batch in flight has been written to the socket (the
  kernel delivers it after the process dies) and spooled batches are in the page cache;
- the machine losing power: additionally the spool's last second (``fsync`` once a second).

Quota is unaffected by any of this: the decision is counted in Redis before the call is forwarded;
the events feed usage history, request logs and counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import orjson

from wemcp.common.events.calls import McpCallCompleted, McpCallsCompleted
from wemcp.common.logging import get_logger
from wemcp.common.telemetry import meter
from wemcp.gateway.spool import Spool

log = get_logger("wemcp.gateway.calls")
SUBJECT, STREAM = McpCallsCompleted.subject, McpCallsCompleted.stream
_CALL_VERSION = McpCallCompleted.model_fields["schema_version"].default
_BATCH_VERSION = McpCallsCompleted.model_fields["schema_version"].default
_now = time.time
_fromts = datetime.fromtimestamp


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
    at: float = 0.0  # when it was recorded (set by CallRecorder.record)


@dataclass(slots=True)
class Batch:
    msg_id: str
    data: bytes
    calls: int


def call_json(rec: CallRecord, event_id: str | None = None) -> bytes:
    """One call as the JSON of :class:`McpCallCompleted`; ``event_id`` defaults to a new uuid4 (a
    batch derives its calls' ids from one random base instead: :func:`call_ids`)."""
    return orjson.dumps({
        "event_id": event_id or str(uuid4()), "occurred_at": _fromts(rec.at or _now(), UTC),
        "schema_version": _CALL_VERSION, "user_id": rec.user_id, "server_slug": rec.server_slug,
        "agent_id": rec.agent_id, "method": rec.method, "tool": rec.tool, "key_source": rec.key_source,
        "metered": rec.metered, "in_agent_run": rec.in_agent_run, "status": rec.status,
        "error_code": rec.error_code, "latency_ms": round(rec.latency_ms, 3),
        "request_bytes": rec.request_bytes, "response_bytes": rec.response_bytes}, option=orjson.OPT_UTC_Z)


def call_ids() -> str:
    """The first 32 characters of the event ids of one batch's calls: a random uuid4 whose last four
    hex digits (in the node field, free in a version-4 UUID) are replaced by the call's index in the
    batch. As unique as a uuid4 per call (112 random bits per batch, ``max_calls`` < 65,536), one
    random draw per batch instead of one system call per call."""
    return str(uuid4())[:32]


def batch_json(parts: list[bytes], gateway: str) -> tuple[str, bytes]:
    """The :class:`McpCallsCompleted` JSON around already-encoded calls: (event_id, body)."""
    event_id = str(uuid4())
    head = orjson.dumps({"event_id": event_id, "occurred_at": datetime.now(UTC),
                         "schema_version": _BATCH_VERSION, "gateway": gateway}, option=orjson.OPT_UTC_Z)
    return event_id, b"".join((head[:-1], b',"calls":[', b",".join(parts), b"]}"))


def instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until ``event`` is set or ``seconds`` pass. (``asyncio.timeout``, not ``wait_for``: before
    Python 3.12, ``wait_for`` can swallow a cancellation that arrives as the event is set, and a
    task stopped that way would never end.)"""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class _Ack:
    """One published batch waiting for JetStream's answer."""

    __slots__ = ("fut", "result", "timer", "token")

    def __init__(self, token: str, fut: asyncio.Future[str | None]) -> None:
        self.token, self.fut = token, fut
        self.result: str | None = _WAITING
        self.timer: asyncio.TimerHandle | None = None


_WAITING = "waiting"
_FULL = "full"


class CallRecorder:
    def __init__(self, spool: Spool | None = None, *, capacity: int = 20_000, linger: float = 0.02,
                 spool_linger: float = 0.1, max_calls: int = 1000, max_bytes: int = 512 * 1024,
                 ack_timeout: float = 2.0, retries: int = 1, drain_seconds: float = 3.0, replay_window: int = 32,
                 gateway: str = "") -> None:
        self.spool = spool
        self.capacity = capacity
        self.linger = linger
        self.spool_linger = spool_linger
        self.max_calls = max_calls
        self.max_bytes = max_bytes
        self.ack_timeout = ack_timeout
        self.retries = retries
        self.drain_seconds = drain_seconds
        self.replay_window = replay_window
        self.gateway = gateway or instance_name()
        # counters, in calls (batches where named so)
        self.published = 0  # acknowledged by JetStream, directly or from the spool
        self.spooled = 0  # appended to the spool
        self.replayed = 0  # acknowledged from the spool
        self.dropped = 0  # lost: spool full, or (without a spool) not published
        self.batches = 0  # batches acknowledged
        self._pending: list[CallRecord] = []
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._waiting: asyncio.Future[str | None] | None = None  # the in-flight batch's, woken when full
        self._replay_wake = asyncio.Event()
        self._inflight: Batch | None = None
        self._nc: Any = None
        self._inbox = ""
        self._sub: Any = None
        self._tokens = itertools.count(1)
        self._acks: dict[str, _Ack] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._dropping = 0  # calls dropped in the current episode (0: not dropping)
        self._metrics()

    # -- the hot path ---------------------------------------------------------------------------------
    def record(self, rec: CallRecord) -> None:
        p = self._pending
        n = len(p)
        if n >= self.capacity:
            self._drop(1, "memory")
            return
        rec.at = _now()
        p.append(rec)
        if n == 0:
            self._wake.set()
        elif n + 1 >= self.max_calls:  # a full batch waits (rare: NATS slow or away)
            self._full.set()
            w = self._waiting
            if w is not None and not w.done():
                w.set_result(_FULL)

    # -- start / stop ---------------------------------------------------------------------------------
    async def start(self, nc: Any) -> None:
        """Publishes on ``nc`` (a connected nats-py client); acknowledgements come to one inbox."""
        self._nc = nc
        self._inbox = nc.new_inbox()
        self._sub = await nc.subscribe(self._inbox + ".*", cb=self._on_ack)
        self._tasks = [asyncio.create_task(self._run(), name="gateway-call-events")]
        if self.spool is not None:
            self._tasks += [asyncio.create_task(self._replay(), name="gateway-call-events-replay"),
                            asyncio.create_task(self._sync(), name="gateway-call-events-fsync")]

    async def stop(self) -> None:
        """Publish what is gathered or in flight for up to ``drain_seconds``; spool the rest."""
        if not self._tasks:
            return
        for t in self._tasks:
            t.cancel()
        await asyncio.wait(self._tasks, timeout=2.0)  # they end at their next await; never hang here
        self._tasks = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_seconds
        batches = [self._inflight] if self._inflight is not None else []
        self._inflight = None
        while self._pending:
            batches.append(self._take())
        done = 0
        if self._connected() and (self.spool is None or self.spool.empty):
            while done < len(batches) and (remaining := deadline - loop.time()) > 0:
                window = batches[done:done + self.replay_window]
                acks = [await self._send(b, min(self.ack_timeout, remaining)) for b in window]
                results = [await self._wait(a) for a in acks]
                ok = 0
                for b, r in zip(window, results, strict=True):
                    if r is not None:
                        break
                    ok += 1
                    self._acked(b)
                done += ok
                if ok < len(window):
                    break
        for b in batches[done:]:
            self._to_spool(b, "stopping")
        if self.spool is not None:
            self.spool.sync()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        log.info("call_events_stopped", **self.stats())

    # -- gathering and publishing ---------------------------------------------------------------------
    def _connected(self) -> bool:
        return bool(self._nc is not None and self._nc.is_connected)

    def _take(self) -> Batch:
        """The next batch from the gathered calls (at most max_calls, about max_bytes)."""
        p = self._pending
        parts: list[bytes] = []
        size, limit = 0, self.max_bytes - 256
        n = 0
        base = call_ids()
        for rec in p[:self.max_calls]:
            part = call_json(rec, f"{base}{n:04x}")
            if parts and size + len(part) + 1 > limit:
                break
            parts.append(part)
            size += len(part) + 1
            n += 1
        self._pending = p[n:] if n < len(p) else []
        if len(self._pending) < self.max_calls:
            self._full.clear()
        msg_id, data = batch_json(parts, self.gateway)
        return Batch(msg_id, data, n)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.linger > 0:
                await asyncio.sleep(self.linger)  # let a burst gather: one message for all of it
            while self._pending:
                if self.spool is None or (self._connected() and self.spool.empty):
                    await self._direct(self._take())
                    continue
                if not self._connected() and len(self._pending) < self.max_calls and self.spool_linger > 0:
                    await _wait(self._full, self.spool_linger)  # bigger batches while NATS is away
                self._to_spool(self._take())

    async def _direct(self, b: Batch) -> None:
        """Publish one batch and wait for its acknowledgement (a batch filled meanwhile goes to the
        spool); tried ``retries`` more times, then spooled."""
        self._inflight = b
        why = "disconnected"
        try:
            for _attempt in range(self.retries + 1):
                if not self._connected() and self.spool is not None:
                    break
                a = await self._send(b, self.ack_timeout)
                r = await self._wait(a, spill=self.spool is not None)
                if r is None:
                    self._acked(b)
                    return
                why = r
            self._to_spool(b, why)
        finally:
            self._inflight = None

    async def _send(self, b: Batch, wait: float) -> _Ack:
        """Publish without waiting: the answer comes to ``_on_ack`` (or the timer expires it)."""
        loop = asyncio.get_running_loop()
        token = str(next(self._tokens))
        a = _Ack(token, loop.create_future())
        self._acks[token] = a
        a.timer = loop.call_later(wait, self._expire, a)
        try:
            await self._nc.publish(SUBJECT, b.data, reply=f"{self._inbox}.{token}",
                                   headers={"Nats-Msg-Id": b.msg_id, "Nats-Expected-Stream": STREAM})
        except asyncio.CancelledError:
            self._settle(a, "cancelled")
            raise
        except Exception as exc:
            self._settle(a, type(exc).__name__)
        return a

    async def _wait(self, a: _Ack, spill: bool = False) -> str | None:
        """None when JetStream acknowledged the batch, else why not. With ``spill``, a batch that
        fills while this one waits is appended to the spool (memory holds one batch in flight)."""
        while True:
            if spill:
                self._waiting = a.fut
            try:
                await a.fut
            finally:
                self._waiting = None
            if a.result != _WAITING:
                return a.result
            while len(self._pending) >= self.max_calls:
                self._to_spool(self._take(), "a batch filled while one was in flight")
            a.fut = asyncio.get_running_loop().create_future()

    def _settle(self, a: _Ack, result: str | None) -> None:
        if a.result != _WAITING:
            return
        a.result = result
        if a.timer is not None:
            a.timer.cancel()
        self._acks.pop(a.token, None)
        if not a.fut.done():
            a.fut.set_result(result)

    def _expire(self, a: _Ack) -> None:
        self._settle(a, "TimeoutError")

    async def _on_ack(self, msg: Any) -> None:
        a = self._acks.get(msg.subject.rpartition(".")[2])
        if a is not None:
            data = msg.data  # a refusal, or "no responders" (a status, no body)
            self._settle(a, "refused" if not data or b'"error"' in data else None)

    def _acked(self, b: Batch) -> None:
        self.published += b.calls
        self.batches += 1
        self._m_published.add(b.calls)

    def _to_spool(self, b: Batch, why: str = "") -> None:
        if self.spool is None:
            self._drop(b.calls, why or "not published")
            return
        if self.spool.append(b.msg_id, b.data, b.calls):
            self.spooled += b.calls
            self._m_spooled.add(b.calls)
            if self._dropping and self.spool.disk_bytes * 2 <= self.spool.max_bytes:
                # the episode ends once the replay has made room (half empty), not when a smaller
                # batch happens to fit the last bytes: one line per episode, not one per flap
                log.warning("call_events_dropping_ended", dropped=self._dropping, spool_bytes=self.spool.disk_bytes)
                self._dropping = 0
            self._replay_wake.set()
        else:
            self._drop(b.calls, "spool full")

    def _drop(self, calls: int, why: str) -> None:
        self.dropped += calls
        self._m_dropped.add(calls, {"reason": why})
        if not self._dropping:
            log.warning("call_events_dropped", reason=why, calls=calls,
                        spool_max_bytes=self.spool.max_bytes if self.spool else None,
                        detail="calls are served; their events are lost until the spool has room again "
                               "(one line per episode)")
        self._dropping += calls

    # -- replay -----------------------------------------------------------------------------------------
    async def _replay(self) -> None:
        spool = self.spool
        assert spool is not None
        backoff = 0.2
        while True:
            await _wait(self._replay_wake, 1.0)
            self._replay_wake.clear()
            while not spool.empty and self._connected():
                found = spool.pending()
                if found is None:
                    break
                seg, records = found
                failed = ""
                for i in range(0, len(records), self.replay_window):
                    window = records[i:i + self.replay_window]
                    acks = [await self._send(Batch(r.msg_id, r.data, r.calls), self.ack_timeout) for r in window]
                    results = [await self._wait(a) for a in acks]
                    failed = next((r for r in results if r is not None), "")
                    if failed:
                        break
                    calls = sum(r.calls for r in window)
                    self.replayed += calls
                    self.published += calls
                    self.batches += len(window)
                    self._m_replayed.add(calls)
                    self._m_published.add(calls)
                    spool.consumed(seg, window[-1].end)
                if failed:
                    log.info("spool_replay_retry", error=failed, backoff=backoff, spool_bytes=spool.depth_bytes)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    break
                backoff = 0.2
            if spool.empty:
                self._wake.set()  # anything gathered meanwhile may go direct again

    async def _sync(self) -> None:
        assert self.spool is not None
        while True:
            await asyncio.sleep(1.0)
            self.spool.sync()

    # -- observability ----------------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        s = {"recorded_pending": len(self._pending), "published": self.published, "spooled": self.spooled,
             "replayed": self.replayed, "dropped": self.dropped, "batches": self.batches}
        if self.spool is not None:
            s |= {"spool_bytes": self.spool.depth_bytes, "spool_batches": self.spool.batches}
        return s

    def _metrics(self) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation

        m = meter("wemcp.gateway.calls")
        self._m_published = m.create_counter("gateway.call_events.published", unit="{call}",
                                             description="call events acknowledged by JetStream")
        self._m_spooled = m.create_counter("gateway.call_events.spooled", unit="{call}",
                                           description="call events written to the spool")
        self._m_replayed = m.create_counter("gateway.call_events.replayed", unit="{call}",
                                            description="call events published from the spool")
        self._m_dropped = m.create_counter("gateway.call_events.dropped", unit="{call}",
                                           description="call events lost (spool full)")

        def depth_bytes(_o: CallbackOptions) -> list[Observation]:
            return [Observation(self.spool.depth_bytes if self.spool else 0)]

        def depth_batches(_o: CallbackOptions) -> list[Observation]:
            return [Observation(self.spool.batches if self.spool else 0)]

        m.create_observable_gauge("gateway.call_events.spool_bytes", [depth_bytes], unit="By",
                                  description="bytes in the spool not yet published")
        m.create_observable_gauge("gateway.call_events.spool_batches", [depth_batches], unit="{batch}",
                                  description="batches in the spool")

        def limit_bytes(_o: CallbackOptions) -> list[Observation]:
            return [Observation(self.spool.max_bytes if self.spool else 0)]

        m.create_observable_gauge("gateway.call_events.spool_limit_bytes", [limit_bytes], unit="By",
                                  description="the spool's size limit (an append past it is dropped)")
