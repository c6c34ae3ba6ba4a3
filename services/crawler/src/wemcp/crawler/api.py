"""WeMcp crawler service: discovery crawls, health probes and request logs.

Every page or server it fetches is chosen by others (registries, submitters), so every fetch goes
through the platform's egress policy: ``settings.egress.client()`` (``wemcp.common.netpolicy``),
never a bare HTTP client.

Crawl routes (admins only; the gateway routes ``/api/v1/admin/crawls`` here):

- ``GET /api/v1/admin/crawls?source&status&page&page_size``: the runs, newest first.
- ``POST /api/v1/admin/crawls`` ``{"source": "registry"|"npm"|"pypi"|null}``: start a run now
  (in the background; 202 with the sources started). Recorded as ``admin.action_recorded``.
"""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select

from wemcp.common.events.admin import AdminActionRecorded
from wemcp.common.identity import AdminUser
from wemcp.common.logging import get_logger
from wemcp.common.outbox import add_event
from wemcp.crawler.config import SOURCES
from wemcp.crawler.models import CrawlRun, bus_tables

router = APIRouter(prefix="/api/v1", tags=["crawler"])
log = get_logger("wemcp.crawler.api")
Source = Literal["registry", "npm", "pypi"]


class CrawlRunRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    source: str
    trigger: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    found: int
    new: int
    updated: int
    errors: int
    pages: int
    requests: int
    error_detail: list[str]
    resumed_from: UUID | None
    since: datetime | None


class CrawlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Source | None = None


@router.get("/admin/crawls")
async def list_crawls(request: Request, who: AdminUser,
                      source: Source | None = None,
                      status: Literal["running", "finished", "failed", "interrupted"] | None = None,
                      page: Annotated[int, Query(ge=1, le=10_000)] = 1,
                      page_size: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    conds = []
    if source is not None:
        conds.append(CrawlRun.source == source)
    if status is not None:
        conds.append(CrawlRun.status == status)
    async with request.app.state.runtime.sessions() as s:
        total = (await s.execute(select(func.count()).select_from(CrawlRun).where(*conds))).scalar_one()
        rows = (await s.execute(select(CrawlRun).where(*conds).order_by(CrawlRun.started_at.desc(), CrawlRun.id)
                                .offset((page - 1) * page_size).limit(page_size))).scalars().all()
    return {"items": [CrawlRunRead.model_validate(r).model_dump(mode="json") for r in rows], "total": total,
            "page": page, "page_size": page_size}


@router.post("/admin/crawls", status_code=202)
async def start_crawl(body: CrawlRequest, request: Request, who: AdminUser) -> dict[str, Any]:
    from wemcp.crawler.crawl import run_crawl

    runtime = request.app.state.runtime
    settings = runtime.settings
    chosen = [body.source] if body.source else [s for s in SOURCES if s in settings.crawl_sources]
    async with runtime.sessions() as s, s.begin():
        await add_event(s, bus_tables, AdminActionRecorded(
            service="crawler", action="crawl.start", actor_id=who.user_id, actor_role=who.role,
            target_type="crawl_source", target_id=",".join(chosen)))
    tasks: set[asyncio.Task[Any]] = runtime.extras.setdefault("crawl_tasks", set())

    async def chain() -> None:
        for source in chosen:
            try:
                await run_crawl(runtime, source, "admin")
            except Exception as exc:
                log.error("crawl_crashed", source=source, error=f"{type(exc).__name__}: {str(exc)[:300]}")

    task = asyncio.create_task(chain())
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return {"started": chosen}
