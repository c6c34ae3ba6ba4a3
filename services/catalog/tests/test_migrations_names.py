"""catalog_0007_names says what happens to each existing name: on a database of its own, migrate to
the revision before, write rows as the old code left them, migrate to head, read the backfill."""

from __future__ import annotations

import uuid

import asyncpg

from wemcp.common.migrations import upgrade_async


async def test_existing_names_are_kept_and_marked(scratch_db: tuple[str, asyncpg.Connection]) -> None:
    url, conn = scratch_db
    await upgrade_async("catalog", url, "catalog_0005")
    owner = uuid.uuid4()
    rows = [("crawled", "com.npmjs/weather", None), ("squat", "io.github.modelcontextprotocol/time", owner),
            ("mine", "io.github.someone/tool", owner)]
    for slug, name, who in rows:
        await conn.execute(
            "INSERT INTO catalog.servers (id, slug, name, version, package_key, title, icon, source_kind, "
            "spec, status, owner_id) VALUES ($1, $2, $3, '1', $2, $2, '', 'x', '{}', 'published', $4)",
            uuid.uuid4(), slug, name, who)
    await upgrade_async("catalog", url)
    got = {r["slug"]: (r["name"], r["name_verification"], r["name_verified_at"])
           for r in await conn.fetch("SELECT * FROM catalog.servers")}
    # nothing renamed (slugs, /mcp/{slug} URLs and registry names stay); no badge for anyone;
    # owned rows are legacy (claimable by the namespace's prover), owner-less rows unclaimed
    assert got == {"crawled": ("com.npmjs/weather", None, None),
                   "squat": ("io.github.modelcontextprotocol/time", "legacy", None),
                   "mine": ("io.github.someone/tool", "legacy", None)}
    assert await conn.fetchval("SELECT count(*) FROM catalog.handles") == 0
    assert await conn.fetchval("SELECT count(*) FROM catalog.domain_claims") == 0
