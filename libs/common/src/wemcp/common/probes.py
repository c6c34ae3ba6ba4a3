"""Bus canaries: every service can emit a ``probe.recorded`` event through its outbox and records
the probes it receives. Operators use them to check the event pipeline end to end
(``POST /internal/bus/probes`` on one service, ``GET /internal/bus/probes`` on another); the
lossless-delivery tests use them to kill a consumer mid-handling (``hold_ms``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, func, select
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.common.events.base import ProbeRecorded
from wemcp.common.outbox import OutboxTables, add_event


def probe_table(metadata: MetaData) -> Table:
    return Table(
        "probe_receipts", metadata,
        Column("event_id", UUID(as_uuid=True), primary_key=True),
        Column("seq", BigInteger, nullable=False),
        Column("note", String(200), nullable=False, server_default=""),
        Column("occurred_at", DateTime(timezone=True), nullable=False),
        Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("handled_by_pid", Integer, nullable=False),
    )


class ProbeCreate(BaseModel):
    count: int = Field(default=1, ge=1, le=10_000)
    start_seq: int = Field(default=0, ge=0)
    note: str = Field(default="", max_length=200)


def make_probe_handler(receipts: Table) -> Any:
    async def on_probe_recorded(event: ProbeRecorded, session: AsyncSession) -> None:
        import os

        # "hold:<ms>" keeps the transaction open, so a test can kill the process mid-handling.
        if event.note.startswith("hold:"):
            await asyncio.sleep(int(event.note.split(":", 1)[1]) / 1000)
        await session.execute(receipts.insert().values(
            event_id=event.event_id, seq=event.seq, note=event.note, occurred_at=event.occurred_at,
            handled_by_pid=os.getpid()))

    return on_probe_recorded


def probe_router(tables: OutboxTables, receipts: Table) -> APIRouter:
    router = APIRouter(prefix="/internal/bus", tags=["internal"], include_in_schema=False)

    @router.post("/probes", status_code=202)
    async def emit(body: ProbeCreate, request: Request) -> dict[str, Any]:
        sessions = request.app.state.runtime.sessions
        ids = []
        async with sessions() as session, session.begin():
            for i in range(body.count):
                event = ProbeRecorded(seq=body.start_seq + i, note=body.note)
                await add_event(session, tables, event)
                ids.append(str(event.event_id))
        return {"emitted": len(ids), "event_ids": ids}

    @router.get("/probes")
    async def received(request: Request, note: str | None = None) -> dict[str, Any]:
        sessions = request.app.state.runtime.sessions
        async with sessions() as session:
            q = select(receipts.c.seq, receipts.c.event_id, receipts.c.handled_by_pid,
                       receipts.c.occurred_at, receipts.c.received_at).order_by(receipts.c.seq)
            if note is not None:
                q = q.where(receipts.c.note == note)
            rows = (await session.execute(q)).all()
        return {"count": len(rows), "items": [
            {"seq": r.seq, "event_id": str(r.event_id), "pid": r.handled_by_pid,
             "lag_ms": round((r.received_at - r.occurred_at).total_seconds() * 1000, 2)} for r in rows]}

    @router.get("/outbox")
    async def outbox_state(request: Request) -> dict[str, Any]:
        sessions = request.app.state.runtime.sessions
        t = tables.outbox
        async with sessions() as session:
            pending = (await session.execute(select(func.count()).where(t.c.published_at.is_(None)))).scalar_one()
            dead = (await session.execute(select(func.count()).select_from(tables.dead_letters))).scalar_one()
        return {"pending": pending, "dead_letters": dead}

    return router
