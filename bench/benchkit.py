"""What the bench scripts share (they run as ``python bench/<name>.py``, so this folder is on the path)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0 to 100), nearest rank: the sorted value at ``round(p/100 * (n-1))``."""
    values = sorted(values)
    return values[max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))]


def with_catalog_infra(prefix: str, body: Callable[[str, str], Awaitable[list[str]]]) -> list[str]:
    """Embedded Postgres (durable, pgvector + pg_trgm, the catalog schema migrated) and NATS in a
    temporary folder; runs ``body(database_url, nats_url)`` and stops both whatever happens."""
    from wemcp.common.migrations import upgrade
    from wemcp.devstack.infra import EmbeddedNats, EmbeddedPostgres

    work = Path(tempfile.mkdtemp(prefix=prefix))
    pg = EmbeddedPostgres(work / "pg", durable=True)
    nats = EmbeddedNats(work / "nats")
    pg.start()
    nats.start()
    try:
        asyncio.run(_extensions(pg.url))
        upgrade("catalog", pg.url)
        return asyncio.run(body(pg.url, nats.url))
    finally:
        nats.stop()
        pg.stop()


async def _extensions(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect("postgresql://" + url.split("://", 1)[1])
    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector; CREATE EXTENSION IF NOT EXISTS pg_trgm;")
    await conn.close()
