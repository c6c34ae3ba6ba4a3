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

from typing import Annotated, Any

from fastapi import APIRouter, Query

from wemcp.common.identity import AdminUser
from wemcp.crawler import service
from wemcp.crawler.deps import Config, Session, State
from wemcp.crawler.schemas import CrawlRequest, CrawlRunList, CrawlsStarted, RunStatus, Source

router = APIRouter(prefix="/api/v1", tags=["crawler"])


@router.get("/admin/crawls", response_model=CrawlRunList)
async def list_crawls(
    s: Session,
    who: AdminUser,
    source: Source | None = None,
    status: RunStatus | None = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    return await service.crawl_runs(s, source, status, page, page_size)


@router.post("/admin/crawls", status_code=202, response_model=CrawlsStarted)
async def start_crawl(body: CrawlRequest, st: State, settings: Config, s: Session, who: AdminUser) -> dict[str, Any]:
    async with s.begin():
        chosen = await service.start_crawls(s, settings, who, body.source)
    service.crawl_in_background(st, chosen)
    return {"started": chosen}
