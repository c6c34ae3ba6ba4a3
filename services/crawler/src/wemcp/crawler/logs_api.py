"""``GET /api/v1/logs/calls``: the request log, newest first, with keyset pagination and CSV export.
Who sees what (``view``) and how: :mod:`wemcp.crawler.logs_service`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from wemcp.common.identity import CurrentUser
from wemcp.crawler import logs_service
from wemcp.crawler.deps import Config, Session, Sessions
from wemcp.crawler.schemas import CallLogPage

router = APIRouter(prefix="/api/v1/logs", tags=["logs"])

Text = Annotated[str | None, Query(min_length=1, max_length=200)]


@router.get("/calls", response_model=CallLogPage, responses={200: {"content": {"text/csv": {}}}})
async def list_calls(
    settings: Config,
    s: Session,
    sessions: Sessions,
    who: CurrentUser,
    view: Literal["own", "servers", "all"] = "own",
    server: Text = None,
    tool: Text = None,
    status: Literal["ok", "error", "refused", "timeout"] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    format: Literal["json", "csv"] = "json",
) -> Any:
    """The calls ``view`` lets the caller see, newest first. JSON: a page of ``limit`` (at most 100,
    default 50) and ``next_cursor``. CSV (``format=csv``): every matching row from ``cursor`` on,
    at most ``limit`` (default and most: the ``logs_export_max_rows`` setting)."""
    asked = logs_service.Asked(
        view=view, server=server, tool=tool, status=status, since=since, until=until, cursor=cursor
    )
    if format == "csv":
        rows = await logs_service.export(sessions, settings, who, asked, limit)
        return StreamingResponse(
            rows,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="calls.csv"', "Cache-Control": "no-store"},
        )
    return await logs_service.calls_page(s, settings, who, asked, limit)
