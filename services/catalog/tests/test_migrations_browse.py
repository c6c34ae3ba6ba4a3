"""catalog_0011: every browse order is read from an index in order (no sort of all enabled rows), and
the downgrade takes the indexes away (on a database of its own in the test Postgres)."""

from __future__ import annotations

import asyncio

import asyncpg
from alembic import command

from wemcp.catalog.repository.search import BROWSE_SORTS
from wemcp.common.migrations import alembic_config, upgrade_async


async def _plan(conn: asyncpg.Connection, order: str) -> str:
    rows = await conn.fetch(f"EXPLAIN SELECT d.server_id FROM catalog.search_docs d WHERE d.enabled "
                            f"ORDER BY {order} LIMIT 20 OFFSET 40")
    return "\n".join(r[0] for r in rows)


async def test_each_browse_order_reads_its_index(scratch_db: tuple[str, asyncpg.Connection]) -> None:
    url, conn = scratch_db
    await upgrade_async("catalog", url)
    await conn.execute("SET enable_seqscan = off; SET enable_sort = off")  # the planner's only way out: an index
    for sort, order in BROWSE_SORTS.items():
        plan = await _plan(conn, order)
        assert f"ix_search_docs_browse_{sort}" in plan and "Sort" not in plan, (sort, plan)
    await asyncio.to_thread(command.downgrade, alembic_config("catalog", url), "catalog_0010_search_bigrams")
    plan = await _plan(conn, BROWSE_SORTS["relevance"])
    assert "ix_search_docs_browse" not in plan and "Sort" in plan
