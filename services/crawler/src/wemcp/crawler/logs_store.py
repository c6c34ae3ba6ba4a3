"""The request log's storage: day partitions (created ahead, dropped past the retention), the batch
insert (one ``COPY`` per consumer batch) and who owns which server. The statements are in
:mod:`wemcp.crawler.repository.logs` (with the keyset-paginated query)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from wemcp.common.events.calls import McpCallCompleted
from wemcp.crawler.repository import logs as logs_db


class Partitions:
    """The days that have a partition, as far as this process knows (a cache: creating one is
    ``IF NOT EXISTS``, so a stale cache costs one statement, never an error)."""

    def __init__(self) -> None:
        self.days: set[date] = set()

    async def load(self, conn: AsyncConnection | AsyncSession) -> list[date]:
        days = await logs_db.partition_days(conn)
        self.days = set(days)
        return days

    async def ensure(self, conn: AsyncConnection | AsyncSession, days: Iterable[date]) -> None:
        for day in sorted(set(days) - self.days):
            await logs_db.create_partition(conn, day)
            self.days.add(day)

    async def maintain(
        self, conn: AsyncConnection, *, retention_days: int, ahead: int, now: datetime | None = None
    ) -> tuple[list[date], list[date]]:
        """Create the partitions of today and the ``ahead - 1`` days after it; drop those whose whole
        day is older than the retention. Returns (created, dropped)."""
        today = (now or datetime.now(UTC)).astimezone(UTC).date()
        existing = set(await self.load(conn))
        want = {today + timedelta(days=n) for n in range(ahead)}
        created = sorted(want - existing)
        await self.ensure(conn, created)
        oldest_kept = today - timedelta(days=retention_days)
        dropped = sorted(d for d in existing if d < oldest_kept)
        for day in dropped:
            await logs_db.drop_partition(conn, day)
            self.days.discard(day)
        return created, dropped


def retention_cutoff(retention_days: int, now: datetime | None = None) -> datetime:
    """Calls before this instant are not kept (their partition is dropped or about to be)."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return datetime.combine(today - timedelta(days=retention_days), datetime.min.time(), UTC)


def _record(c: McpCallCompleted) -> tuple[Any, ...]:
    """A call as a ``call_logs`` row, in ``COPY_COLUMNS`` order."""
    at = c.occurred_at if c.occurred_at.tzinfo else c.occurred_at.replace(tzinfo=UTC)
    return (
        at,
        c.event_id,
        c.user_id,
        c.server_slug,
        c.method,
        c.tool,
        c.key_source,
        c.metered,
        c.status,
        c.error_code,
        float(c.latency_ms),
        int(c.request_bytes),
        int(c.response_bytes),
        c.in_agent_run,
    )


async def insert_calls(
    session: AsyncSession, partitions: Partitions, calls: Sequence[McpCallCompleted], *, retention_days: int
) -> int:
    """Write ``calls`` with one ``COPY`` in the session's transaction; calls older than the retention
    are left out (their day is gone). Returns how many rows were written."""
    cutoff = retention_cutoff(retention_days)
    records = [r for r in map(_record, calls) if r[0] >= cutoff]
    if not records:
        return 0
    await partitions.ensure(session, {r[0].astimezone(UTC).date() for r in records})
    await logs_db.copy_calls(session, records)
    return len(records)


async def record_owner(session: AsyncSession, slug: str, owner_id: UUID | None) -> None:
    """``owner_id`` owns ``slug`` from now on (the owner view shows its calls)."""
    await logs_db.record_owner(session, slug, owner_id)
