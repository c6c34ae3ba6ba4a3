"""All SQL of the crawler service, split by subject: :mod:`.crawls` (runs, each source's state, the
packages found), :mod:`.probes` (probe targets and results), :mod:`.logs` (the request log's day
partitions, its ``COPY`` and query, the server owners). Each function is one statement (or one row
fetch) on the caller's session or connection; no decisions, no events chosen (those are the service
modules': ``service.py``, ``crawl.py``, ``probes.py``, ``logs_*.py``).

Here, what the subjects share: the database's clock and adding a row."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession


async def now(s: AsyncSession) -> datetime:
    """The database's clock: ``now()``, the start of the session's transaction."""
    at: datetime = (await s.execute(select(func.now()))).scalar_one()
    return at


def now_sql() -> ColumnElement[datetime]:
    """``now()`` as an expression: set on a loaded row, the database's clock is written at the flush."""
    return func.now()


def add(s: AsyncSession, row: Any) -> None:
    """Add a new row; it is written at the next flush."""
    s.add(row)
