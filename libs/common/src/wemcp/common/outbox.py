"""Transactional outbox.

A service writes its state change and :func:`add_event` in the same transaction; the event row and
a ``NOTIFY`` become visible together on commit. :class:`OutboxRelay` (one per process; several may
run, ``FOR UPDATE SKIP LOCKED`` keeps them apart) publishes pending rows to JetStream with
``Nats-Msg-Id`` = ``event_id`` and marks them sent only after JetStream acknowledged them. If the
relay dies between publish and mark, the next attempt is deduplicated by JetStream within its
duplicate window and, beyond it, by the consumers' ``processed_events`` table.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from nats.js import JetStreamContext
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from wemcp.common.events.base import Event
from wemcp.common.logging import get_logger
from wemcp.common.telemetry import inject_headers, meter

log = get_logger("wemcp.outbox")


@dataclass(frozen=True)
class OutboxTables:
    schema: str
    outbox: Table
    processed: Table
    dead_letters: Table

    @property
    def channel(self) -> str:
        return f"wemcp_outbox_{self.schema}"


def outbox_tables(metadata: MetaData) -> OutboxTables:
    """Declare the outbox, processed-events and dead-letter tables in a service's metadata
    (so its Alembic migrations create them in its schema)."""
    schema = metadata.schema
    assert schema, "service metadata must name its schema"
    outbox = Table(
        "outbox", metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
        Column("subject", String(200), nullable=False),
        Column("payload", Text, nullable=False),
        Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True)),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("last_error", Text),
        Index("ix_outbox_pending", "id", postgresql_where=text("published_at IS NULL")),
    )
    processed = Table(
        "processed_events", metadata,
        Column("consumer", String(120), nullable=False),
        Column("event_id", UUID(as_uuid=True), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("consumer", "event_id"),
    )
    dead_letters = Table(
        "dead_letters", metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("consumer", String(120), nullable=False),
        Column("subject", String(200), nullable=False),
        Column("payload", Text, nullable=False),
        Column("error", Text, nullable=False),
        Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    return OutboxTables(schema, outbox, processed, dead_letters)


async def add_event(session: AsyncSession, tables: OutboxTables, event: Event) -> None:
    """Stage ``event`` in the caller's transaction. Nothing is published unless it commits."""
    await session.execute(tables.outbox.insert().values(
        event_id=event.event_id,
        subject=event.subject,
        payload=event.model_dump_json(),
        headers=inject_headers(),
    ))
    # Delivered to listeners only on commit, so the relay wakes exactly when there is work.
    await session.execute(text("SELECT pg_notify(:ch, '')"), {"ch": tables.channel})


class OutboxRelay:
    """Publishes committed outbox rows to JetStream, in id order, with at-least-once delivery."""

    def __init__(self, engine: AsyncEngine, tables: OutboxTables, js: JetStreamContext, *,
                 listen_dsn: str | None = None, batch_size: int = 1000, poll_interval: float = 1.0,
                 publish_timeout: float = 5.0, retention_hours: float = 72.0) -> None:
        self.engine = engine
        self.tables = tables
        self.js = js
        self.listen_dsn = listen_dsn
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.publish_timeout = publish_timeout
        self.retention_hours = retention_hours
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._stopping = False
        m = meter("wemcp.outbox")
        self._published = m.create_counter("outbox.published", description="events relayed to JetStream")
        self._lag = m.create_histogram("outbox.lag", unit="ms", description="commit to PubAck")
        self.published_total = 0
        # PubAcks come to one inbox subscription, matched by token: no request, future timer and
        # reply subscription per event (nats-py's js.publish), which was most of the relay's CPU
        self._inbox = ""
        self._inbox_sub: Any = None
        self._tokens = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        if self.listen_dsn:
            with contextlib.suppress(Exception):  # polling still works without LISTEN
                self._listener = await asyncpg.connect(self.listen_dsn, timeout=5)
                await self._listener.add_listener(self.tables.channel, self._on_notify)
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.tables.schema}")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)
        if self._inbox_sub is not None:
            with contextlib.suppress(Exception):
                await self._inbox_sub.unsubscribe()
            self._inbox_sub = None

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def _run(self) -> None:
        last_cleanup = 0.0
        failures = 0
        while not self._stopping:
            try:
                sent = await self.relay_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.warning("outbox_relay_failed", schema=self.tables.schema, error=str(exc)[:300],
                            attempt=failures)
                await asyncio.sleep(min(0.2 * 2 ** min(failures, 5), 5.0))
                continue
            if time.monotonic() - last_cleanup > 600:
                last_cleanup = time.monotonic()
                with contextlib.suppress(Exception):
                    await self._cleanup()
            if sent >= self.batch_size:
                continue  # more may be waiting
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval)

    async def relay_once(self) -> int:
        """Publish one batch; return how many rows were marked sent."""
        t = self.tables.outbox
        async with self.engine.begin() as conn:
            rows = (await conn.execute(
                t.select().with_only_columns(t.c.id, t.c.event_id, t.c.subject, t.c.payload, t.c.headers,
                                             t.c.created_at)
                .where(t.c.published_at.is_(None)).order_by(t.c.id).limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )).all()
            if not rows:
                return 0
            # Publishes are written to the socket in order; awaiting the acks together keeps the
            # batch fast without reordering it.
            results = await self._publish_all(rows)
            done: list[int] = []
            error: BaseException | None = None
            for row, res in zip(rows, results, strict=True):
                if res is not None:
                    error = res
                    break  # keep order: later rows wait for this one
                done.append(row.id)
            if done:
                await conn.execute(t.update().where(t.c.id.in_(done)).values(published_at=func.now()))
            if error is not None:
                failed = rows[len(done)]
                await conn.execute(t.update().where(t.c.id == failed.id).values(
                    attempts=t.c.attempts + 1, last_error=str(error)[:1000]))
        now = time.time()
        for row in rows[: len(done)]:
            self._lag.record((now - row.created_at.timestamp()) * 1000, {"schema": self.tables.schema})
        self._published.add(len(done), {"schema": self.tables.schema})
        self.published_total += len(done)
        if error is not None:
            raise error
        return len(done)

    async def _publish_all(self, rows: Sequence[Any]) -> list[BaseException | None]:
        """Publish ``rows`` in order, each with a reply subject under one inbox, and wait for their
        PubAcks together (at most ``publish_timeout``). Returns None (acknowledged) or the error per row."""
        nc = self.js._nc
        if self._inbox_sub is None:
            self._inbox = nc.new_inbox()
            self._inbox_sub = await nc.subscribe(self._inbox + ".*", cb=self._on_ack)
        loop = asyncio.get_running_loop()
        sent: list[tuple[str, asyncio.Future[None]]] = []
        failure: BaseException | None = None
        for row in rows:
            token = str(next(self._tokens))
            headers = {k: str(v) for k, v in (row.headers or {}).items()}
            headers["Nats-Msg-Id"] = str(row.event_id)
            headers["content-type"] = "application/json"
            fut: asyncio.Future[None] = loop.create_future()
            self._waiting[token] = fut
            try:
                await nc.publish(row.subject, row.payload.encode(), reply=f"{self._inbox}.{token}", headers=headers)
            except Exception as exc:
                self._waiting.pop(token, None)
                failure = exc
                break  # the rest would only wait for this one
            sent.append((token, fut))
        if sent:
            await asyncio.wait([f for _, f in sent], timeout=self.publish_timeout)
        results: list[BaseException | None] = []
        for token, fut in sent:
            self._waiting.pop(token, None)
            if not fut.done():
                fut.cancel()
                results.append(TimeoutError(f"no PubAck within {self.publish_timeout} s"))
            else:
                results.append(fut.exception())
        lost = failure or RuntimeError("not published: an earlier event of the batch failed")
        return results + [lost] * (len(rows) - len(results))

    async def _on_ack(self, msg: Any) -> None:
        fut = self._waiting.pop(msg.subject.rpartition(".")[2], None)
        if fut is None or fut.done():
            return  # answered after its time-out
        status = msg.headers.get("Status") if msg.headers else None
        if status:  # "no responders" (503): no stream takes the subject, or JetStream is not there
            fut.set_exception(RuntimeError(f"JetStream did not take the event: {status} "
                                           f"{msg.headers.get('Description', '')}".strip()))
            return
        try:
            ack = json.loads(msg.data)
        except ValueError:
            ack = {"error": {"description": "unreadable PubAck"}}
        if isinstance(ack, dict) and "error" in ack:
            fut.set_exception(RuntimeError(f"JetStream refused the event: {ack['error']}"))
        else:
            fut.set_result(None)

    async def _cleanup(self) -> None:
        t = self.tables.outbox
        async with self.engine.begin() as conn:
            await conn.execute(t.delete().where(
                t.c.published_at.is_not(None),
                t.c.published_at < func.now() - text(f"interval '{float(self.retention_hours)} hours'"),
            ))
