"""The request log's storage: day partitions (created ahead, dropped past the retention), the batch
insert (one ``COPY`` per consumer batch) and the keyset-paginated query."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from wemcp.common.events.calls import McpCallCompleted
from wemcp.common.logging import get_logger
from wemcp.crawler.logs_models import COPY_COLUMNS

log = get_logger("wemcp.crawler.logs")

SCHEMA = "crawler"
PARENT = "call_logs"
_PARTITION = re.compile(r"^call_logs_p(\d{8})$")


def partition_name(day: date) -> str:
    return f"{PARENT}_p{day:%Y%m%d}"


def _create_sql(day: date) -> str:
    nxt = day + timedelta(days=1)
    return (f"CREATE TABLE IF NOT EXISTS {SCHEMA}.{partition_name(day)} PARTITION OF {SCHEMA}.{PARENT} "
            f"FOR VALUES FROM ('{day.isoformat()} 00:00+00') TO ('{nxt.isoformat()} 00:00+00')")


class Partitions:
    """The days that have a partition, as far as this process knows (a cache: creating one is
    ``IF NOT EXISTS``, so a stale cache costs one statement, never an error)."""

    def __init__(self) -> None:
        self.days: set[date] = set()

    async def load(self, conn: AsyncConnection | AsyncSession) -> list[date]:
        rows = (await conn.execute(text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
            "WHERE n.nspname = :s AND p.relname = :p"), {"s": SCHEMA, "p": PARENT})).scalars().all()
        days = sorted(datetime.strptime(m.group(1), "%Y%m%d").date()
                      for r in rows if (m := _PARTITION.match(r)))
        self.days = set(days)
        return days

    async def ensure(self, conn: AsyncConnection | AsyncSession, days: Iterable[date]) -> None:
        for day in sorted(set(days) - self.days):
            await conn.execute(text(_create_sql(day)))
            self.days.add(day)

    async def maintain(self, conn: AsyncConnection, *, retention_days: int, ahead: int,
                       now: datetime | None = None) -> tuple[list[date], list[date]]:
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
            await conn.execute(text(f"DROP TABLE IF EXISTS {SCHEMA}.{partition_name(day)}"))
            self.days.discard(day)
        return created, dropped


def retention_cutoff(retention_days: int, now: datetime | None = None) -> datetime:
    """Calls before this instant are not kept (their partition is dropped or about to be)."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return datetime.combine(today - timedelta(days=retention_days), datetime.min.time(), UTC)


def _record(c: McpCallCompleted) -> tuple[Any, ...]:
    at = c.occurred_at if c.occurred_at.tzinfo else c.occurred_at.replace(tzinfo=UTC)
    return (at, c.event_id, c.user_id, c.server_slug, c.method, c.tool, c.key_source, c.metered, c.status,
            c.error_code, float(c.latency_ms), int(c.request_bytes), int(c.response_bytes), c.in_agent_run)


async def insert_calls(session: AsyncSession, partitions: Partitions, calls: Sequence[McpCallCompleted],
                       *, retention_days: int) -> int:
    """Write ``calls`` with one ``COPY`` in the session's transaction; calls older than the retention
    are left out (their day is gone). Returns how many rows were written."""
    cutoff = retention_cutoff(retention_days)
    records = [r for r in map(_record, calls) if r[0] >= cutoff]
    if not records:
        return 0
    await partitions.ensure(session, {r[0].astimezone(UTC).date() for r in records})
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
        PARENT, schema_name=SCHEMA, columns=list(COPY_COLUMNS), records=records)
    return len(records)


# -- the query -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CallQuery:
    """One page of the log: newest first, keyset on (at, event_id)."""

    since: datetime
    until: datetime
    limit: int
    user_id: UUID | None = None  # a caller's own log
    servers: tuple[str, ...] | None = None  # the servers one may see (owner view); None: any
    server: str | None = None
    tool: str | None = None
    status: str | None = None
    after: tuple[datetime, UUID] | None = None  # the cursor: rows strictly older than this


_SELECT = ("SELECT at, event_id, user_id, server_slug, method, tool, key_source, metered, status, error_code, "
           "latency_ms, request_bytes, response_bytes FROM crawler.call_logs")


async def query_calls(session: AsyncSession, q: CallQuery) -> list[dict[str, Any]]:
    where = ["at >= :since", "at < :until"]
    params: dict[str, Any] = {"since": q.since, "until": q.until, "limit": q.limit}
    if q.user_id is not None:
        where.append("user_id = :user_id")
        params["user_id"] = q.user_id
    if q.servers is not None:
        where.append("server_slug = ANY(:servers)")
        params["servers"] = list(q.servers)
    if q.server is not None:
        where.append("server_slug = :server")
        params["server"] = q.server
    if q.tool is not None:
        where.append("tool = :tool")
        params["tool"] = q.tool
    if q.status is not None:
        where.append("status = :status")
        params["status"] = q.status
    if q.after is not None:
        # (at, event_id) < (:at, :id), spelled so the at bound alone is an index condition
        where.append("at <= :after_at AND (at < :after_at OR event_id < :after_id)")
        params["after_at"], params["after_id"] = q.after
    sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY at DESC, event_id DESC LIMIT :limit"
    rows = (await session.execute(text(sql), params)).mappings().all()
    return [dict(r) for r in rows]


async def owned_servers(session: AsyncSession, owner_id: UUID) -> list[str]:
    rows = await session.execute(text(
        "SELECT slug FROM crawler.logs_server_owners WHERE owner_id = :o ORDER BY slug"), {"o": owner_id})
    return list(rows.scalars().all())


async def record_owner(session: AsyncSession, slug: str, owner_id: UUID | None) -> None:
    await session.execute(text(
        "INSERT INTO crawler.logs_server_owners (slug, owner_id) VALUES (:s, :o) "
        "ON CONFLICT (slug) DO UPDATE SET owner_id = EXCLUDED.owner_id, updated_at = now()"),
        {"s": slug, "o": owner_id})
