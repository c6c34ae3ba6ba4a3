"""SQL of the news feed's projection of goods' announcements (``announcements.py``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.catalog.models import News


async def put_announcement(s: AsyncSession, values: dict[str, Any]) -> None:
    """Write an announcement's news row unless the row holds a higher ``source_version`` already
    (``author_id`` stays the first writer's)."""
    stmt = pg_insert(News).values(**values)
    await s.execute(
        stmt.on_conflict_do_update(
            index_elements=[News.id],
            set_={k: v for k, v in values.items() if k not in ("id", "author_id")},
            where=or_(News.source_version.is_(None), News.source_version < stmt.excluded.source_version),
        )
    )
