"""SQL of the health probes: ``probe_targets`` (folded from the bus) and ``probe_results``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.crawler.models import ProbeResult, ProbeTarget


async def forget_target(s: AsyncSession, slug: str) -> None:
    await s.execute(delete(ProbeTarget).where(ProbeTarget.slug == slug))


async def put_target(s: AsyncSession, values: Mapping[str, Any]) -> None:
    """Insert or replace the target ``values["slug"]``; a redelivered older deployment (by
    ``deployed_at``) does not replace a newer one."""
    stmt = pg_insert(ProbeTarget).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[ProbeTarget.slug],
        set_={k: stmt.excluded[k] for k in values if k != "slug"},
        where=or_(ProbeTarget.deployed_at.is_(None), ProbeTarget.deployed_at < stmt.excluded.deployed_at),
    )
    await s.execute(stmt)


async def lock_target(s: AsyncSession, slug: str) -> ProbeTarget | None:
    """The target, locked to the end of the transaction."""
    return (await s.execute(select(ProbeTarget).where(ProbeTarget.slug == slug).with_for_update())).scalar_one_or_none()


async def target(s: AsyncSession, slug: str, *, for_update: bool = False) -> ProbeTarget | None:
    return await s.get(ProbeTarget, slug, with_for_update=for_update)


async def called(s: AsyncSession, slug: str, at: datetime) -> None:
    """The target's last call is ``at`` unless a later one is known."""
    await s.execute(
        ProbeTarget.__table__.update()
        .where(ProbeTarget.slug == slug, or_(ProbeTarget.last_call_at.is_(None), ProbeTarget.last_call_at < at))
        .values(last_call_at=at)
    )


async def uptime(s: AsyncSession, slug: str, since: datetime) -> tuple[int, int]:
    """The probes of ``slug`` after ``since``: how many, and how many answered (up or degraded)."""
    ok = ProbeResult.status.in_(("up", "degraded"))
    total, good = (
        await s.execute(
            select(func.count(), func.count().filter(ok)).where(ProbeResult.slug == slug, ProbeResult.at > since)
        )
    ).one()
    return total, good


async def latency(s: AsyncSession, slug: str, since: datetime) -> tuple[float | None, float | None]:
    """p50 and p95 of the latency of the probes of ``slug`` after ``since`` that have one."""
    p50, p95 = (
        await s.execute(
            select(
                func.percentile_cont(0.5).within_group(ProbeResult.latency_ms),
                func.percentile_cont(0.95).within_group(ProbeResult.latency_ms),
            ).where(ProbeResult.slug == slug, ProbeResult.at > since, ProbeResult.latency_ms.is_not(None))
        )
    ).one()
    return p50, p95


async def due_slugs(s: AsyncSession, limit: int) -> list[str]:
    """Enabled targets whose next probe is due (or never set), and idle ones called since their last
    probe; the longest due first."""
    return list(
        (
            await s.execute(
                select(ProbeTarget.slug)
                .where(
                    ProbeTarget.enabled,
                    or_(
                        ProbeTarget.next_probe_at <= func.now(),
                        ProbeTarget.next_probe_at.is_(None),
                        # an idle server that was called since its last probe is awake again
                        and_(ProbeTarget.status == "idle", ProbeTarget.last_call_at > ProbeTarget.last_probe_at),
                    ),
                )
                .order_by(ProbeTarget.next_probe_at.nulls_first())
                .limit(limit)
            )
        ).scalars()
    )


async def prune_results(s: AsyncSession, keep_days: int) -> None:
    """Drop the results older than ``keep_days`` by the database's clock."""
    await s.execute(delete(ProbeResult).where(ProbeResult.at < func.now() - timedelta(days=keep_days)))
