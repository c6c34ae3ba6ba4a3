"""SQL of the review queue and the admin area (``review.py``): trusted publishers and the pages
of servers by status."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import String, cast, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.catalog.models import Publisher, Server


async def is_trusted(s: AsyncSession, user_id: uuid.UUID | None) -> bool:
    """Whether an admin marked ``user_id`` as a trusted publisher."""
    return bool((await s.execute(select(Publisher.trusted).where(Publisher.user_id == user_id))).scalar_one_or_none())


async def review_page(
    s: AsyncSession,
    after: tuple[datetime, str] | None,
    limit: int,
) -> tuple[int, Sequence[Server]]:
    """How many servers wait for review, and up to ``limit`` of them, oldest request first, after
    the ``(requested_at, id)`` cursor."""
    q = select(Server).where(Server.status == "pending_review")
    if after is not None:
        at, sid = after
        q = q.where(
            (Server.review_requested_at > at) | ((Server.review_requested_at == at) & (cast(Server.id, String) > sid))
        )
    total = (
        await s.execute(select(func.count()).select_from(Server).where(Server.status == "pending_review"))
    ).scalar_one()
    rows = (
        (await s.execute(q.order_by(Server.review_requested_at, cast(Server.id, String)).limit(limit))).scalars().all()
    )
    return total, rows


async def servers_page(
    s: AsyncSession, status: str | None, search: str | None, after: tuple[datetime, str] | None, limit: int
) -> tuple[dict[str, int], Sequence[Server]]:
    """The count of servers per status, and up to ``limit`` servers (of ``status``, whose name, title
    or slug contain ``search``) newest change first, after the ``(updated_at, id)`` cursor."""
    conds = []
    if status:
        conds.append(Server.status == status)
    if search:
        like = f"%{search.replace('%', '').replace('_', '')}%"
        conds.append(Server.name.ilike(like) | Server.title.ilike(like) | Server.slug.ilike(like))
    query = select(Server).where(*conds)
    if after is not None:
        at, sid = after
        query = query.where((Server.updated_at < at) | ((Server.updated_at == at) & (cast(Server.id, String) > sid)))
    counts = {st: n for st, n in (await s.execute(select(Server.status, func.count()).group_by(Server.status))).all()}
    rows = (
        (await s.execute(query.order_by(Server.updated_at.desc(), cast(Server.id, String)).limit(limit)))
        .scalars()
        .all()
    )
    return counts, rows


async def publishers(s: AsyncSession, trusted: bool | None, limit: int) -> Sequence[Publisher]:
    """Publishers (those ``trusted`` is, when given), last changed first."""
    q = select(Publisher)
    if trusted is not None:
        q = q.where(Publisher.trusted == trusted)
    return (await s.execute(q.order_by(Publisher.updated_at.desc()).limit(limit))).scalars().all()


async def publisher_for_update(s: AsyncSession, user_id: uuid.UUID) -> Publisher | None:
    return await s.get(Publisher, user_id, with_for_update=True)


async def put_publisher(
    s: AsyncSession, user_id: uuid.UUID, trusted: bool, note: str | None, set_by: uuid.UUID | None
) -> None:
    """Write a publisher's trust (a new row, or a change of the row)."""
    await s.execute(
        pg_insert(Publisher)
        .values(user_id=user_id, trusted=trusted, note=note, set_by=set_by)
        .on_conflict_do_update(
            index_elements=[Publisher.user_id],
            set_={"trusted": trusted, "note": note, "set_by": set_by, "updated_at": func.now()},
        )
    )


async def stored_publisher(s: AsyncSession, user_id: uuid.UUID) -> Publisher | None:
    """A publisher's row as stored now (what the session holds is read again)."""
    s.expire_all()
    return await s.get(Publisher, user_id)
