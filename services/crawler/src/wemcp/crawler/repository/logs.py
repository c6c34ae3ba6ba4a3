"""SQL of the request log: its day partitions (``call_logs_pYYYYMMDD``: listed, created, dropped), the
batch insert (one ``COPY``), the keyset-paginated query, and who owns which server."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from wemcp.crawler.models import COPY_COLUMNS

SCHEMA = "crawler"
PARENT = "call_logs"
_PARTITION = re.compile(r"^call_logs_p(\d{8})$")

Conn = AsyncConnection | AsyncSession


# -- day partitions --------------------------------------------------------------------------------------


def partition_name(day: date) -> str:
    return f"{PARENT}_p{day:%Y%m%d}"


def _create_sql(day: date) -> str:
    nxt = day + timedelta(days=1)
    return (
        f"CREATE TABLE IF NOT EXISTS {SCHEMA}.{partition_name(day)} PARTITION OF {SCHEMA}.{PARENT} "
        f"FOR VALUES FROM ('{day.isoformat()} 00:00+00') TO ('{nxt.isoformat()} 00:00+00')"
    )


async def partition_days(conn: Conn) -> list[date]:
    """The days that have a partition, in order."""
    rows = (
        (
            await conn.execute(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
                    "WHERE n.nspname = :s AND p.relname = :p"
                ),
                {"s": SCHEMA, "p": PARENT},
            )
        )
        .scalars()
        .all()
    )
    return sorted(datetime.strptime(m.group(1), "%Y%m%d").date() for r in rows if (m := _PARTITION.match(r)))


async def create_partition(conn: Conn, day: date) -> None:
    await conn.execute(text(_create_sql(day)))


async def drop_partition(conn: Conn, day: date) -> None:
    await conn.execute(text(f"DROP TABLE IF EXISTS {SCHEMA}.{partition_name(day)}"))


# -- the batch insert ------------------------------------------------------------------------------------


async def copy_calls(session: AsyncSession, records: Sequence[tuple[Any, ...]]) -> None:
    """One ``COPY`` of ``records`` (tuples in ``COPY_COLUMNS`` order) in the session's transaction; their
    days' partitions must exist."""
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
        PARENT, schema_name=SCHEMA, columns=list(COPY_COLUMNS), records=records
    )


# -- the query -------------------------------------------------------------------------------------------


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


_SELECT = (
    "SELECT at, event_id, user_id, server_slug, method, tool, key_source, metered, status, error_code, "
    "latency_ms, request_bytes, response_bytes FROM crawler.call_logs"
)


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


# -- server owners ---------------------------------------------------------------------------------------


async def owned_servers(session: AsyncSession, owner_id: UUID) -> list[str]:
    rows = await session.execute(
        text("SELECT slug FROM crawler.logs_server_owners WHERE owner_id = :o ORDER BY slug"), {"o": owner_id}
    )
    return list(rows.scalars().all())


async def record_owner(session: AsyncSession, slug: str, owner_id: UUID | None) -> None:
    await session.execute(
        text(
            "INSERT INTO crawler.logs_server_owners (slug, owner_id) VALUES (:s, :o) "
            "ON CONFLICT (slug) DO UPDATE SET owner_id = EXCLUDED.owner_id, updated_at = now()"
        ),
        {"s": slug, "o": owner_id},
    )
