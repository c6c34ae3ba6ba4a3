"""The lifecycle-position migrations backfill rows that exist (catalog_0005, deployer_0004), on a
database of their own in the test Postgres: migrate to the revision before, write rows as the old
code left them, migrate to head, read the backfill."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from wemcp.common.migrations import upgrade_async


async def test_backfill_of_existing_rows(scratch_db: tuple[str, asyncpg.Connection]) -> None:
    url, conn = scratch_db
    await upgrade_async("catalog", url, "catalog_0003")
    await upgrade_async("deployer", url, "deployer_0002")
    rows = [("pub", "published", None, "2026-11-30T10:00:00Z"), ("fail", "failed", None, None),
            ("dep", "deploying", None, None), ("off", "disabled", "published", "2026-11-29T10:00:00Z"),
            ("off2", "disabled", None, None)]
    for slug, status, before, deployed_at in rows:
        await conn.execute(
            "INSERT INTO catalog.servers (id, slug, name, version, package_key, title, icon, source_kind, "
            "spec, status, status_before_disable, deployed_at) VALUES ($1, $2, $2, '1', $2, $2, '', 'x', "
            "'{}', $3, $4, $5::timestamptz)", uuid.uuid4(), slug, status, before,
            None if deployed_at is None else datetime.fromisoformat(deployed_at))
    await conn.execute(
        "INSERT INTO deployer.deployments (id, server_id, slug, name, spec, backend, status, desired, "
        "generation, steps, protocol_versions, introspection, log_tail) VALUES ($1, $2, 'pub', '', '{}', "
        "'local', 'deployed', 'running', 4, '[{\"step\": \"queued\"}, {\"step\": \"deployed\"}]', '[]', "
        "'{}', '')", uuid.uuid4(), uuid.uuid4())
    await upgrade_async("catalog", url)
    await upgrade_async("deployer", url)
    got = {r["slug"]: (r["lifecycle_generation"], r["lifecycle_seq"], r["lifecycle_terminal"],
                       r["lifecycle_at"] is not None, r["decision_seq"], r["revision"])
           for r in await conn.fetch("SELECT * FROM catalog.servers")}
    assert got == {"pub": (0, 0, True, True, 0, 1), "fail": (0, 0, True, False, 0, 1),
                   "dep": (0, 0, False, False, 0, 1), "off": (0, 0, True, True, 1, 1),
                   "off2": (0, 0, False, False, 1, 1)}
    d = await conn.fetchrow("SELECT generation, seq, decision_seq, decision_at, revision "
                            "FROM deployer.deployments")
    assert tuple(d) == (4, 2, 0, None, 0)  # the next event of generation 4 is seq 3
