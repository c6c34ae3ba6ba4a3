"""SQL of table B, the search projection (``projection.py``, ``handlers.py``): its upsert, the
enabled flag and health that follow A, and the call counters."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Text, cast, func, literal, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.catalog.models import SearchDoc, Server


def _weighted(tokens: str, weight: str) -> Any:
    return func.setweight(
        func.to_tsvector(literal_column("'simple'::regconfig"), cast(literal(tokens), Text)),
        literal_column(f"'{weight}'::\"char\""),
    )


def weighted_tsv(a: str, b: str, c: str) -> Any:
    """B's ``tsv`` from its indexed texts: ``a`` weighted A (title, slug, name), ``b`` B (tools,
    tags), ``c`` C (description)."""
    return _weighted(a, "A").op("||")(_weighted(b, "B")).op("||")(_weighted(c, "C"))


async def embedded_text_hash(s: AsyncSession, server_id: uuid.UUID) -> str | None:
    """The hash of the text B's vector of the server was made from (None: no row, or no vector)."""
    return (
        await s.execute(select(SearchDoc.embedded_text_hash).where(SearchDoc.server_id == server_id))
    ).scalar_one_or_none()


async def put_search_doc(s: AsyncSession, values: dict[str, Any]) -> None:
    """Upsert B's row of ``values["server_id"]`` (every column of ``values``)."""
    stmt = pg_insert(SearchDoc).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[SearchDoc.server_id], set_={k: stmt.excluded[k] for k in values if k != "server_id"}
    )
    await s.execute(stmt)


async def server_status(s: AsyncSession, server_id: Any) -> str | None:
    """A's status of the server (None: no such server)."""
    return (await s.execute(select(Server.status).where(Server.id == server_id))).scalar_one_or_none()


async def set_enabled(s: AsyncSession, server_id: Any, enabled: bool) -> None:
    await s.execute(
        SearchDoc.__table__.update()
        .where(SearchDoc.server_id == server_id)
        .values(enabled=enabled, updated_at=func.now())
    )


async def set_health(s: AsyncSession, server_id: uuid.UUID, health: str) -> None:
    """B's ``health`` (the ``healthy`` search filter) follows A's last probe."""
    await s.execute(update(SearchDoc).where(SearchDoc.server_id == server_id).values(health=health))


# table names are our own constants, values are bound parameters
_LOCK_SERVERS = text(
    f"SELECT id FROM {Server.__table__.fullname} WHERE slug = ANY(CAST(:slugs AS text[])) "  # noqa: S608
    "ORDER BY slug FOR UPDATE"
)
_ADD_CALLS = text(
    f"UPDATE {Server.__table__.fullname} AS s SET calls = s.calls + v.n "  # noqa: S608
    "FROM unnest(CAST(:slugs AS text[]), CAST(:ns AS bigint[])) AS v(slug, n) "
    "WHERE s.slug = v.slug RETURNING s.id, s.calls, s.stars, v.n"
)
_SET_POPULARITY = text(
    f"UPDATE {SearchDoc.__table__.fullname} AS d SET popularity = v.p "  # noqa: S608
    "FROM unnest(CAST(:ids AS uuid[]), CAST(:ps AS bigint[])) AS v(id, p) "
    "WHERE d.server_id = v.id"
)


async def add_calls(s: AsyncSession, slugs: list[str], ns: list[int]) -> list[Any]:
    """Add ``ns[i]`` calls to A's counter of ``slugs[i]`` (``slugs`` sorted: the rows are locked in
    that order first, so two transactions on the same servers wait instead of deadlocking). Rows of
    (id, calls, stars, added); unknown slugs are skipped."""
    await s.execute(_LOCK_SERVERS, {"slugs": slugs})
    return list((await s.execute(_ADD_CALLS, {"slugs": slugs, "ns": ns})).all())


async def set_popularity(s: AsyncSession, ids: list[Any], popularity: list[int]) -> None:
    """B's popularity of the servers ``ids``, in one statement."""
    await s.execute(_SET_POPULARITY, {"ids": ids, "ps": popularity})
