"""The event bus: FastStream over NATS JetStream.

- :func:`create_broker` builds a broker (nothing connects until ``broker.start()``).
- :func:`ensure_streams` declares one stream per aggregate, idempotently, before anyone publishes.
- :func:`subscribe` registers a durable pull consumer whose handler runs *exactly once in effect*:
  the handler's writes and a row in the service's ``processed_events`` table commit in one
  transaction, and the message is acked only after that commit. A redelivery of an event already
  processed is acked without running the handler again. A handler that raises leaves nothing
  written and the message is redelivered with backoff; a message that cannot be parsed is parked in
  ``dead_letters`` (nothing is lost) and terminated so it cannot block the consumer.
- :class:`BatchSubscription` / :class:`BatchConsumer`: the same guarantees for high-volume streams
  whose handlers commute (usage, counters), applied a batch at a time — one transaction records
  every new ``(consumer, event_id)`` and runs the handler once with the list of new events, then
  every message of the batch is acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import nats.js.errors
from faststream.middlewares import AckPolicy
from faststream.nats import AckPolicy as JsAckPolicy
from faststream.nats import ConsumerConfig, DeliverPolicy, JStream, NatsBroker, NatsMessage, PullSub
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import ValidationError
from sqlalchemy import bindparam, func, insert, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.common.events.base import STREAMS, Event
from wemcp.common.logging import get_logger
from wemcp.common.outbox import OutboxTables
from wemcp.common.telemetry import extract_context, meter, tracer

log = get_logger("wemcp.bus")
E = TypeVar("E", bound=Event)
Handler = Callable[..., Awaitable[None]]  # (event, session) or (event, session, runtime)


@dataclass(frozen=True)
class Subscription:
    """What a service consumes: the event class, its handler and how many run at once."""

    event: type[Event]
    handler: Handler
    max_workers: int = 1
    durable: str | None = None


@dataclass(frozen=True)
class BatchSubscription:
    """A batch consumer: one durable consumer of ``events`` (subjects of one stream) whose handler
    takes a *list* of events — ``async (events, session)`` or ``async (events, session, runtime)`` —
    and applies them in one transaction. Only for handlers whose effects commute (counters, usage,
    append-only logs): messages are handed over in stream order, but a redelivered message is
    applied in a later batch than the ones that followed it.

    ``durable`` defaults to the name the single-event consumer of ``events[0]`` had, so a consumer
    moved to batches keeps its ``processed_events`` rows (what it applied before is not applied
    again). ``linger``: once a message is there, wait this long for more before applying (when the
    previous batch was full there is a backlog and nothing waits): one transaction per ``linger``
    instead of one per message, the consumer's CPU and fsyncs per event, for that much lag."""

    events: tuple[type[Event], ...]
    handler: Handler
    durable: str | None = None
    max_batch: int = 1000
    linger: float = 0.2

DUPLICATE_WINDOW_SECONDS = 15 * 60
_REDELIVERY_BACKOFF = (0.5, 1, 2, 5, 10, 30, 60)


def create_broker(nats_url: str, service: str, **kwargs: Any) -> NatsBroker:
    return NatsBroker(
        nats_url,
        name=f"wemcp-{service}",
        max_reconnect_attempts=-1,  # keep trying while NATS restarts; the outbox holds what we emit
        reconnect_time_wait=1,
        connect_timeout=3,
        logger=None,
        **kwargs,
    )


async def ensure_streams(js: JetStreamContext) -> None:
    """Create or update every stream. Safe to run from every process at start-up."""
    for spec in STREAMS:
        config = StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            description=spec.description,
            storage=StorageType.FILE,
            max_age=timedelta(days=spec.max_age_days).total_seconds(),
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
        )
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            # exists with another config: bring it in line (additive changes only)
            await js.update_stream(config)


def consumer_name(service: str, event_cls: type[Event]) -> str:
    """Durable names like ``catalog-server-disabled`` (JetStream forbids dots)."""
    return f"{service}-{event_cls.subject.replace('.', '-').replace('_', '-')}"


def subscribe(
    broker: NatsBroker,
    event_cls: type[E],
    handler: Handler,
    *,
    service: str,
    sessions: async_sessionmaker[AsyncSession],
    tables: OutboxTables,
    ack_wait: float = 30.0,
    durable: str | None = None,
    max_workers: int = 1,
    runtime: Any = None,
) -> str:
    """Register ``handler`` for ``event_cls`` as a durable JetStream pull consumer.

    ``max_workers=1`` (the default) handles one message at a time, in stream order — what
    order-sensitive consumers need (a ``server.disabled`` followed by ``server.enabled``). Consumers
    whose handlers commute (usage counters, request logs) raise it: each handler commits its own
    transaction, so concurrent handlers let Postgres group their commits, which is where the
    throughput is (one fsync per event otherwise)."""
    durable = durable or consumer_name(service, event_cls)
    span_tracer = tracer(f"wemcp.{service}.bus")
    handled = meter(f"wemcp.{service}.bus").create_counter(
        "bus.messages", description="messages handled by outcome")
    handler_name = getattr(handler, "__qualname__", repr(handler))
    # Handlers take (event, session) or (event, session, runtime) when they need the process's clients
    # (an embedder, an HTTP client): passed explicitly rather than through module-level state.
    wants_runtime = len(inspect.signature(handler).parameters) >= 3

    async def on_message(msg: NatsMessage) -> None:
        headers = dict(msg.headers or {})
        raw = msg.raw_message
        delivered = getattr(getattr(raw, "metadata", None), "num_delivered", 1) or 1
        try:
            event = event_cls.model_validate_json(msg.body)
        except ValidationError as exc:
            await _park(sessions, tables, durable, raw.subject, msg.body, str(exc))
            await msg.reject()
            handled.add(1, {"consumer": durable, "outcome": "dead_letter"})
            log.error("event_rejected", consumer=durable, subject=raw.subject, error=str(exc)[:500])
            return

        start = time.perf_counter()
        with span_tracer.start_as_current_span(
            f"consume {event_cls.subject}", context=extract_context(headers), kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "nats", "messaging.destination.name": event_cls.subject,
                        "messaging.consumer.group.name": durable, "messaging.message.id": str(event.event_id),
                        "messaging.delivery_count": delivered},
        ) as span:
            # Long handlers (a deployment) tell JetStream they are alive, so it does not redeliver
            # to another worker while this one still works.
            heartbeat = asyncio.create_task(_keep_alive(msg, ack_wait))
            try:
                async with sessions() as session, session.begin():
                    inserted = await session.execute(
                        pg_insert(tables.processed)
                        .values(consumer=durable, event_id=event.event_id)
                        .on_conflict_do_nothing()
                        .returning(tables.processed.c.event_id)
                    )
                    if inserted.first() is None:
                        outcome = "duplicate"
                    else:
                        if wants_runtime:
                            await handler(event, session, runtime)
                        else:
                            await handler(event, session)
                        outcome = "ok"
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR))
                delay = _REDELIVERY_BACKOFF[min(delivered - 1, len(_REDELIVERY_BACKOFF) - 1)]
                log.exception("event_handler_failed", consumer=durable, handler=handler_name,
                              event_id=str(event.event_id), delivered=delivered, retry_in_s=delay)
                handled.add(1, {"consumer": durable, "outcome": "error"})
                await msg.nack(delay=delay)
                return
            finally:
                heartbeat.cancel()
        await msg.ack()
        handled.add(1, {"consumer": durable, "outcome": outcome})
        log.debug("event_handled", consumer=durable, event_id=str(event.event_id), outcome=outcome,
                  ms=round((time.perf_counter() - start) * 1000, 2))

    on_message.__name__ = f"on_{event_cls.subject.replace('.', '_')}__{service}"
    stream_name = event_cls.stream
    broker.subscriber(
        event_cls.subject,
        stream=JStream(name=stream_name, declare=False),
        durable=durable,
        # batch_size=1: nats-py's lingering fetch returns on the first message only when the
        # batch is full, so a larger batch would hold a lone event until the fetch timeout.
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        ack_policy=AckPolicy.MANUAL,
        max_workers=max_workers,
        config=ConsumerConfig(
            durable_name=durable,
            ack_policy=JsAckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            deliver_policy=DeliverPolicy.ALL,
            max_deliver=-1,
            max_ack_pending=max(64, 4 * max_workers),
            filter_subject=event_cls.subject,
        ),
        title=durable,
        description=f"{service} consumes {event_cls.subject}",
    )(on_message)
    return durable


async def _keep_alive(msg: NatsMessage, ack_wait: float) -> None:
    while True:
        await asyncio.sleep(max(ack_wait / 2, 0.2))
        with contextlib.suppress(Exception):
            await msg.in_progress()


async def _park(sessions: async_sessionmaker[AsyncSession], tables: OutboxTables, consumer: str,
                subject: str, body: bytes, error: str) -> None:
    async with sessions() as session, session.begin():
        await session.execute(insert(tables.dead_letters).values(
            consumer=consumer, subject=subject, payload=body.decode("utf-8", "replace"), error=error[:4000]))



class BatchConsumer:
    """Runs one :class:`BatchSubscription`: a durable JetStream pull consumer read with raw pull
    requests, so a batch is what is *available* rather than what fills it (nats-py's ``fetch(n)``
    holds a lone message until ``n`` arrive or the fetch expires).

    The loop: when the last batch was full (a backlog), ask for ``max_batch`` with ``no_wait`` — the
    server sends what it has and ends with a "no messages" status. Otherwise wait for one message
    with a lingering request, let ``linger`` pass, and take what gathered with ``no_wait``.

    A batch: messages that do not parse are parked in ``dead_letters`` and terminated (they never
    block the others); the rest, in one transaction, insert their ``(consumer, event_id)`` into
    ``processed_events`` (``ON CONFLICT DO NOTHING RETURNING``: what is returned is new), the handler
    runs once with the new events in stream order, the transaction commits, and only then is every
    message acked (duplicates too). If the handler fails, the batch is rolled back and its events
    are applied one per transaction, so one event that cannot be applied is nacked with backoff
    alone while the others go through (after three failures in a row — the database is down — the
    rest are nacked without trying)."""

    def __init__(self, sub: BatchSubscription, *, service: str, sessions: async_sessionmaker[AsyncSession],
                 tables: OutboxTables, ack_wait: float = 30.0, runtime: Any = None,
                 pull_expires: float = 5.0) -> None:
        streams = {e.stream for e in sub.events}
        if len(streams) != 1:
            raise ValueError(f"a batch consumer reads one stream, not {sorted(streams)}")
        self.sub = sub
        self.service = service
        self.stream = streams.pop()
        self.durable = sub.durable or consumer_name(service, sub.events[0])
        self.classes = {e.subject: e for e in sub.events}
        self.sessions = sessions
        self.tables = tables
        self.ack_wait = ack_wait
        self.runtime = runtime
        self.pull_expires = pull_expires
        self.wants_runtime = len(inspect.signature(sub.handler).parameters) >= 3
        self.handler_name = getattr(sub.handler, "__qualname__", repr(sub.handler))
        self.applied = 0  # events applied (not counting duplicates)
        self.batches = 0
        self._nc: Any = None
        self._inbox = ""
        self._inbox_sub: Any = None
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self._stopping = False
        self._tracer = tracer(f"wemcp.{service}.bus")
        self._handled = meter(f"wemcp.{service}.bus").create_counter(
            "bus.messages", description="messages handled by outcome")
        p = tables.processed
        ids = bindparam("ids", type_=ARRAY(PG_UUID(as_uuid=True)))
        self._record = (pg_insert(p).from_select(["consumer", "event_id"],
                                                select(literal(self.durable), func.unnest(ids)))
                        .on_conflict_do_nothing().returning(p.c.event_id))

    @property
    def subjects(self) -> list[str]:
        return list(self.classes)

    async def start(self, nc: Any) -> None:
        """Create (or bring in line) the durable consumer and start pulling on ``nc``'s connection."""
        self._nc = nc
        subjects = self.subjects
        config = ConsumerConfig(
            durable_name=self.durable, ack_policy=JsAckPolicy.EXPLICIT, ack_wait=self.ack_wait,
            deliver_policy=DeliverPolicy.ALL, max_deliver=-1,
            max_ack_pending=max(1024, 4 * self.sub.max_batch),
            filter_subject=subjects[0] if len(subjects) == 1 else None,
            filter_subjects=subjects if len(subjects) > 1 else None,
            description=f"{self.service} consumes {', '.join(subjects)} in batches")
        # Creating an existing durable updates what may change (filter subjects, ack wait): a
        # consumer that took single events keeps its position and its processed_events rows.
        await nc.jetstream().add_consumer(self.stream, config)
        self._inbox = nc.new_inbox()
        self._inbox_sub = await nc.subscribe(self._inbox, cb=self._on_msg)
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}"
        self._task = asyncio.create_task(self._run(), name=f"batch-consumer-{self.durable}")

    async def stop(self, wait: float = 10.0) -> None:
        """Let a batch being applied finish (it would be redelivered and skipped anyway), then stop."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while self._busy and loop.time() < deadline:  # noqa: ASYNC110 (bounded)
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        if self._inbox_sub is not None:
            with contextlib.suppress(Exception):
                await self._inbox_sub.unsubscribe()
            self._inbox_sub = None

    async def _on_msg(self, msg: Msg) -> None:
        self._queue.put_nowait(msg)

    # -- pulling --------------------------------------------------------------------------------
    async def _run(self) -> None:
        backlog = False
        failures = 0
        while not self._stopping:
            try:
                msgs = await self._pull(backlog)
                if msgs and not self._stopping:
                    self._busy = True
                    try:
                        await self.apply(msgs)
                    finally:
                        self._busy = False
                backlog = len(msgs) >= self.sub.max_batch
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away, the database away: keep trying, never die
                failures += 1
                backlog = False
                log.warning("batch_consumer_failed", consumer=self.durable, error=str(exc)[:300], attempt=failures)
                await asyncio.sleep(min(0.2 * 2 ** min(failures, 5), 5.0))

    async def _pull(self, backlog: bool) -> list[Msg]:
        n = self.sub.max_batch
        if backlog:
            return await self._request(n, no_wait=True)
        first = await self._request(1, no_wait=False)
        if not first:
            return []
        if self.sub.linger > 0:
            await asyncio.sleep(self.sub.linger)  # let more gather: one transaction for all of them
        return first + await self._request(n - 1, no_wait=True) if n > 1 else first

    async def _request(self, n: int, *, no_wait: bool) -> list[Msg]:
        """Ask for up to ``n`` messages; return those delivered before the server said it has no
        more (no_wait), the lingering request expired, or ``n`` arrived."""
        got = self._take(n)  # delivered for an earlier request that timed out on our side
        if len(got) >= n:
            return got
        want = n - len(got)
        req: dict[str, Any] = {"batch": want}
        if no_wait:
            req["no_wait"] = True
        else:
            req["expires"] = int(self.pull_expires * 1e9)
        await self._nc.publish(self._next, json.dumps(req).encode(), reply=self._inbox)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.pull_expires + 1.0
        queue = self._queue
        while len(got) < n:
            if queue.empty():
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    msg = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    break
            else:
                msg = queue.get_nowait()
            status = msg.headers.get("Status") if msg.headers else None
            if status:
                if status == "100":  # idle heartbeat
                    continue
                break  # 404 no messages, 408 expired, 409 ...: this request is over
            got.append(msg)
        return got

    def _take(self, n: int) -> list[Msg]:
        got: list[Msg] = []
        queue = self._queue
        while len(got) < n and not queue.empty():
            msg = queue.get_nowait()
            if not (msg.headers and msg.headers.get("Status")):
                got.append(msg)
        return got

    # -- applying -------------------------------------------------------------------------------
    async def apply(self, msgs: list[Msg]) -> None:
        """Apply one batch of delivered messages (see the class docstring)."""
        start = time.perf_counter()
        parsed: dict[Any, tuple[Msg, Event]] = {}
        duplicates: list[Msg] = []
        poison: list[tuple[Msg, str]] = []
        for m in msgs:
            cls = self.classes.get(m.subject)
            try:
                if cls is None:
                    raise ValueError(f"{self.durable} does not consume {m.subject!r}")
                event = cls.model_validate_json(m.data)
            except (ValidationError, ValueError) as exc:
                poison.append((m, str(exc)))
                continue
            if event.event_id in parsed:
                duplicates.append(m)  # the same event twice in one batch: applied once, both acked
            else:
                parsed[event.event_id] = (m, event)
        if poison:
            await self._park(poison)
        if not parsed:
            for m in duplicates:
                await m.ack()
            return
        with self._tracer.start_as_current_span(
            f"consume {', '.join(self.subjects)}", kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "nats", "messaging.consumer.group.name": self.durable,
                        "messaging.batch.message_count": len(msgs)},
        ) as span:
            try:
                new = await self._transaction(list(parsed.values()))
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR))
                log.warning("event_batch_failed", consumer=self.durable, handler=self.handler_name,
                            events=len(parsed), error=str(exc)[:500])
                await self._one_by_one(list(parsed.values()))
                for m in duplicates:
                    await m.ack()
                return
        for m, _ in parsed.values():
            await m.ack()
        for m in duplicates:
            await m.ack()
        self.applied += new
        self.batches += 1
        self._handled.add(new, {"consumer": self.durable, "outcome": "ok"})
        if len(parsed) + len(duplicates) > new:
            self._handled.add(len(parsed) + len(duplicates) - new, {"consumer": self.durable, "outcome": "duplicate"})
        log.debug("event_batch_handled", consumer=self.durable, messages=len(msgs), applied=new,
                  ms=round((time.perf_counter() - start) * 1000, 2))

    async def _transaction(self, items: list[tuple[Msg, Event]]) -> int:
        async with self.sessions() as session, session.begin():
            ids = [e.event_id for _, e in items]
            new_ids = set((await session.execute(self._record, {"ids": ids})).scalars())
            events = [e for _, e in items if e.event_id in new_ids]
            if events:
                if self.wants_runtime:
                    await self.sub.handler(events, session, self.runtime)
                else:
                    await self.sub.handler(events, session)
            return len(events)

    async def _one_by_one(self, items: list[tuple[Msg, Event]]) -> None:
        failures = 0
        for m, event in items:
            delivered = getattr(m.metadata, "num_delivered", 1) or 1
            delay = _REDELIVERY_BACKOFF[min(delivered - 1, len(_REDELIVERY_BACKOFF) - 1)]
            if failures >= 3:
                await m.nak(delay=delay)
                continue
            try:
                new = await self._transaction([(m, event)])
            except Exception:
                failures += 1
                log.exception("event_handler_failed", consumer=self.durable, handler=self.handler_name,
                              event_id=str(event.event_id), delivered=delivered, retry_in_s=delay)
                self._handled.add(1, {"consumer": self.durable, "outcome": "error"})
                await m.nak(delay=delay)
                continue
            failures = 0
            self.applied += new
            await m.ack()

    async def _park(self, poison: list[tuple[Msg, str]]) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(insert(self.tables.dead_letters), [
                {"consumer": self.durable, "subject": m.subject, "payload": m.data.decode("utf-8", "replace"),
                 "error": error[:4000]} for m, error in poison])
        for m, error in poison:
            await m.term()
            log.error("event_rejected", consumer=self.durable, subject=m.subject, error=error[:500])
        self._handled.add(len(poison), {"consumer": self.durable, "outcome": "dead_letter"})
