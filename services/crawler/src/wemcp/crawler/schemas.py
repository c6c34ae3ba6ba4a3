"""HTTP shapes of the crawler's API: the crawl runs (``api.py``) and the request log
(``logs_api.py``). Responses forbid extra keys: a key the use case adds but the model does not list
fails the request instead of vanishing."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict

Source = Literal["registry", "npm", "pypi"]
RunStatus = Literal["running", "finished", "failed", "interrupted"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- crawl runs ------------------------------------------------------------------------------------------


class CrawlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Source | None = None


class CrawlRunRead(_Out):
    model_config = ConfigDict(extra="forbid", from_attributes=True)

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


class CrawlRunList(_Out):
    items: list[CrawlRunRead]
    total: int
    page: int
    page_size: int


class CrawlsStarted(_Out):
    started: list[str]  # the sources started, in the order they run


# -- the request log -------------------------------------------------------------------------------------


class CallLogItem(_Out):
    at: datetime
    id: UUID
    caller: str | None  # the account id (own, all) or a pseudonym (servers); None: anonymous
    server: str
    method: str
    tool: str | None
    key_source: str
    metered: bool
    status: str
    error_code: int | None
    latency_ms: float
    request_bytes: int
    response_bytes: int


class CallLogPage(_Out):
    items: list[CallLogItem]
    next_cursor: str | None  # pass as ``cursor`` for the next (older) page; None: no more
