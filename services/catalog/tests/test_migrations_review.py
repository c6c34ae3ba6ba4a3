"""The review-queue migration (catalog_0009_review_queue) and the admin migration of auth
(auth_0005_admin_audit) on a database of their own: migrate to the revision before, write rows as the
old code left them, migrate to head, read the backfill; then the new rules hold at the database (the
widened status check, the append-only audit log), and both downgrade cleanly."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from alembic import command

from wemcp.common.migrations import alembic_config, upgrade_async


async def test_existing_rows_are_backfilled(scratch_db: tuple[str, asyncpg.Connection]) -> None:
    url, conn = scratch_db
    await upgrade_async("catalog", url, "catalog_0005")
    await upgrade_async("auth", url, "auth_0003")
    for slug, status in (("pub", "published"), ("sub", "submitted"), ("off", "disabled")):
        await conn.execute(
            "INSERT INTO catalog.servers (id, slug, name, version, package_key, title, icon, source_kind, "
            "spec, status) VALUES ($1, $2, $2, '1', $2, $2, '', 'x', '{}', $3)", uuid.uuid4(), slug, status)
    maker = uuid.uuid4()
    await conn.execute("INSERT INTO auth.users (id, login, avatar_url, role, disabled) "
                       "VALUES ($1, 'maker', '', 'admin', false)", maker)
    for code, used in (("a" * 64, True), ("b" * 64, False)):
        await conn.execute(
            "INSERT INTO auth.invites (id, code_hash, role, created_by, expires_at, used_at) "
            "VALUES ($1, $2, 'merchant', $3, now() + interval '1 day', "
            "CASE WHEN $4 THEN now() ELSE NULL END)", uuid.uuid4(), code, maker, used)

    await upgrade_async("catalog", url)
    await upgrade_async("auth", url)
    got = {r["slug"]: (r["status"], r["review_cleared"]) for r in await conn.fetch(
        "SELECT slug, status, review_cleared FROM catalog.servers")}
    assert got == {"pub": ("published", True), "sub": ("submitted", True), "off": ("disabled", True)}
    invites = {r["code_hash"][0]: (r["uses"], r["max_uses"]) for r in await conn.fetch(
        "SELECT code_hash, uses, max_uses FROM auth.invites")}
    assert invites == {"a": (1, 1), "b": (0, 1)}
    user = await conn.fetchrow("SELECT banned_at, deleted_at, disabled FROM auth.users")
    assert tuple(user) == (None, None, False)

    # new rows: not cleared until reviewed; the new statuses pass the check, nonsense does not
    await conn.execute(
        "INSERT INTO catalog.servers (id, slug, name, version, package_key, title, icon, source_kind, "
        "spec, status) VALUES ($1, 'new', 'new', '1', 'new', 'new', '', 'x', '{}', 'pending_review')",
        uuid.uuid4())
    assert await conn.fetchval("SELECT review_cleared FROM catalog.servers WHERE slug = 'new'") is False
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("UPDATE catalog.servers SET status = 'approved' WHERE slug = 'new'")
    await conn.execute("UPDATE catalog.servers SET status = 'rejected' WHERE slug = 'new'")
    # the audit log takes rows and gives none back
    await conn.execute(
        "INSERT INTO auth.audit_log (event_id, service, action, target_type, target_id, occurred_at) "
        "VALUES ($1, 'auth', 'user.ban', 'user', 'x', now())", uuid.uuid4())
    for stmt in ("UPDATE auth.audit_log SET reason = 'x'", "DELETE FROM auth.audit_log"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(stmt)
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("UPDATE auth.invites SET uses = max_uses + 1")

    # and back: the statuses the old check does not know become drafts
    await asyncio.to_thread(command.downgrade, alembic_config("catalog", url), "catalog_0005")
    await asyncio.to_thread(command.downgrade, alembic_config("auth", url), "auth_0003")
    assert await conn.fetchval("SELECT status FROM catalog.servers WHERE slug = 'new'") == "draft"
    assert await conn.fetchval("SELECT to_regclass('auth.audit_log')") is None
    assert await conn.fetchval("SELECT to_regclass('catalog.publishers')") is None
