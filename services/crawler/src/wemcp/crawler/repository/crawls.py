"""SQL of the discovery crawls: ``crawl_runs``, ``crawl_state``, ``discovered`` and the crawl's
``crawler.discovered`` events (a page's events in one insert)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.common.events.crawler import CrawlerDiscovered
from wemcp.common.telemetry import inject_headers
from wemcp.crawler.models import CrawlRun, CrawlState, Discovered, bus_tables


async def runs_page(
    s: AsyncSession, source: str | None, status: str | None, page: int, page_size: int
) -> tuple[int, Sequence[CrawlRun]]:
    """One page of the runs, newest first, with the count of all that match."""
    conds = []
    if source is not None:
        conds.append(CrawlRun.source == source)
    if status is not None:
        conds.append(CrawlRun.status == status)
    total = (await s.execute(select(func.count()).select_from(CrawlRun).where(*conds))).scalar_one()
    rows = (
        (
            await s.execute(
                select(CrawlRun)
                .where(*conds)
                .order_by(CrawlRun.started_at.desc(), CrawlRun.id)
                .offset((page - 1) * page_size)
                .limit(page_size)
            )
        )
        .scalars()
        .all()
    )
    return total, rows


async def run(s: AsyncSession, run_id: uuid.UUID, *, for_update: bool = False) -> CrawlRun | None:
    return await s.get(CrawlRun, run_id, with_for_update=for_update)


async def lock_state(s: AsyncSession, source: str) -> CrawlState:
    """The source's state, made when it has none yet, locked to the end of the transaction."""
    await s.execute(pg_insert(CrawlState).values(source=source).on_conflict_do_nothing())
    return (await s.execute(select(CrawlState).where(CrawlState.source == source).with_for_update())).scalar_one()


async def state(s: AsyncSession, source: str, *, for_update: bool = False) -> CrawlState | None:
    return await s.get(CrawlState, source, with_for_update=for_update)


async def interrupt(s: AsyncSession, run_id: uuid.UUID, at: datetime) -> None:
    """The run, if it is still ``running``, ends ``interrupted``."""
    await s.execute(
        update(CrawlRun)
        .where(CrawlRun.id == run_id, CrawlRun.status == "running")
        .values(status="interrupted", finished_at=at)
    )


async def release_lease(s: AsyncSession, source: str, run_id: uuid.UUID) -> None:
    """The source's lease, if ``run_id`` still holds it, is free (its position stays)."""
    await s.execute(
        update(CrawlState)
        .where(CrawlState.source == source, CrawlState.run_id == run_id)
        .values(lease_owner=None, lease_until=None)
    )


async def lock_discovered(s: AsyncSession, keys: Iterable[str]) -> dict[str, Discovered]:
    """The packages already found among ``keys``, by key, locked to the end of the transaction."""
    return {
        r.package_key: r
        for r in (
            await s.execute(select(Discovered).where(Discovered.package_key.in_(list(keys))).with_for_update())
        ).scalars()
    }


async def pypi_names(s: AsyncSession) -> Sequence[str | None]:
    """The PyPI packages the registry entries found name."""
    return (
        (await s.execute(select(Discovered.pypi_name).where(Discovered.pypi_name.is_not(None)).distinct()))
        .scalars()
        .all()
    )


async def add_events(s: AsyncSession, events: Sequence[CrawlerDiscovered]) -> None:
    """Stage ``events`` in the outbox with one insert (``add_event`` a page at a time), and wake the
    relay at commit."""
    headers = inject_headers()
    await s.execute(
        bus_tables.outbox.insert(),
        [
            {"event_id": e.event_id, "subject": e.subject, "payload": e.model_dump_json(), "headers": headers}
            for e in events
        ],
    )
    await s.execute(text("SELECT pg_notify(:ch, '')"), {"ch": bus_tables.channel})
