"""The database's clock and transaction-scoped locks, shared by the repository's subjects."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession


def now() -> Any:
    """The transaction's time (``now()``), for a column the caller sets on a row it changes."""
    return func.now()


async def advisory_lock(s: AsyncSession, key: str) -> None:
    """A transaction-scoped advisory lock on ``key``: callers with the same key take turns."""
    await s.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))
