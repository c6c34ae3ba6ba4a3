"""The crawler's process state and database session as FastAPI dependencies. Handlers declare
``st: State``, ``settings: Config``, ``s: Session`` or ``sessions: Sessions`` in their signature instead of reaching
``request.app.state``.

The process state is the service's :class:`~wemcp.common.service.Runtime` itself: the crawls an admin
starts run in the background on it (``run_crawl(runtime, ...)``, tracked in its ``extras``), and the
request log's CSV export opens a session per page from it while the response streams."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from wemcp.common.deps import RuntimeOf, Session, Sessions
from wemcp.crawler.config import Settings

__all__ = ["Config", "Session", "Sessions", "State"]


def settings(rt: RuntimeOf) -> Settings:
    assert isinstance(rt.settings, Settings)
    return rt.settings


State = RuntimeOf
Config = Annotated[Settings, Depends(settings)]
