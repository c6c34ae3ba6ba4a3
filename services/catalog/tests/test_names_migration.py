"""catalog_0007_names says what happens to each existing name: on a database of its own, migrate to
the revision before, write rows as the old code left them, migrate to head, read the backfill."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from wemcp.common.migrations import upgrade_async


async def test_existing_names_are_kept_and_marked(infra: Any) -> None:
    base = "postgresql://" + infra.database_url.split("://", 1)[1]
    db = f"migr_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base)
    await admin.execute(f'CREATE DATABASE "{db}"')
    url = base.rsplit("/", 1)[0] + f"/{db}"
    try:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector; CREATE EXTENSION IF NOT EXISTS pg_trgm;")
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
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
