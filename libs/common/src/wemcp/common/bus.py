"""The event bus: FastStream over NATS JetStream.

- :func:`create_broker` builds a broker (nothing connects until ``broker.start()``).
- :func:`ensure_streams` declares one stream per aggregate, idempotently, before anyone publishes.
- :func:`subscribe` registers a durable pull consumer whose handler runs *exactly once in effect*:
  the handler's writes and a row in the service's ``processed_events`` table commit in one
  transaction, and the message is acked only after that commit. A redelivery of an event already
  processed is acked without running the handler again. A handler that raises leaves nothing
  written and the message is redelivered with backoff; a message that cannot be parsed is parked in
  ``dead_letters`` (nothing is lost) and terminated so it cannot block the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import nats.js.errors
from faststream.middlewares import AckPolicy
from faststream.nats import AckPolicy as JsAckPolicy
from faststream.nats import ConsumerConfig, DeliverPolicy, JStream, NatsBroker, NatsMessage, PullSub
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import ValidationError
from sqlalchemy import insert
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

