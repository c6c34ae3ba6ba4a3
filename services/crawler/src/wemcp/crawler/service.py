"""The crawl routes' use cases (``api.py``): the runs an admin reads, and the runs an admin starts
(recorded as ``admin.action_recorded``, then run in the background by :mod:`wemcp.crawler.crawl`)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.common.events.admin import AdminActionRecorded
from wemcp.common.identity import Identity
from wemcp.common.outbox import add_event
from wemcp.common.service import Runtime
from wemcp.crawler import crawl
from wemcp.crawler.config import Settings
from wemcp.crawler.models import bus_tables
from wemcp.crawler.repository import crawls as crawls_db
from wemcp.crawler.schemas import CrawlRunRead


async def crawl_runs(
    s: AsyncSession, source: str | None, status: str | None, page: int, page_size: int
) -> dict[str, Any]:
    """One page of the runs, newest first."""
    total, rows = await crawls_db.runs_page(s, source, status, page, page_size)
    return {
        "items": [CrawlRunRead.model_validate(r).model_dump(mode="json") for r in rows],
        "total": total,
        "page": page,
        "page_size": page_size,
    }


async def start_crawls(s: AsyncSession, settings: Settings, who: Identity, source: str | None) -> list[str]:
    """The sources an admin's start runs (``source``, or every configured one), recorded as the admin's
    action in the caller's transaction."""
    chosen = [source] if source else crawl.configured_sources(settings)
    await add_event(
        s,
        bus_tables,
        AdminActionRecorded(
            service="crawler",
            action="crawl.start",
            actor_id=who.user_id,
            actor_role=who.role,
            target_type="crawl_source",
            target_id=",".join(chosen),
        ),
    )
    return chosen


def crawl_in_background(runtime: Runtime, sources: list[str]) -> None:
    """Run ``sources`` one after the other in a task of the process (cancelled when it stops)."""
    tasks: set[asyncio.Task[Any]] = runtime.extras.setdefault("crawl_tasks", set())
    task = asyncio.create_task(crawl.crawl_all(runtime, "admin", sources))
    tasks.add(task)
    task.add_done_callback(tasks.discard)
