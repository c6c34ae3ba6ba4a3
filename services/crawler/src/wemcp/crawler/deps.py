"""The crawler's process state and database session as FastAPI dependencies. Handlers declare
``st: State``, ``settings: Config``, ``s: Session`` or ``sessions: Sessions`` in their signature instead of reaching
``request.app.state``.

The process state is the service's :class:`~wemcp.common.service.Runtime` itself: the crawls an admin
starts run in the background on it (``run_crawl(runtime, ...)``, tracked in its ``extras``), and the
request log's CSV export opens a session per page from it while the response streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.common.service import Runtime
from wemcp.crawler.config import Settings


def state(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def settings(rt: Annotated[Runtime, Depends(state)]) -> Settings:
    assert isinstance(rt.settings, Settings)
    return rt.settings


def sessions(rt: Annotated[Runtime, Depends(state)]) -> async_sessionmaker[AsyncSession]:
    """Where a handler that needs more than the request's session (a streamed export) opens its own."""
    assert rt.sessions is not None
    return rt.sessions


async def session(
    factory: Annotated[async_sessionmaker[AsyncSession], Depends(sessions)],
) -> AsyncIterator[AsyncSession]:
    """One session per request; a handler that writes opens its transaction with ``s.begin()``."""
    async with factory() as s:
        yield s


State = Annotated[Runtime, Depends(state)]
Config = Annotated[Settings, Depends(settings)]
Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(sessions)]
Session = Annotated[AsyncSession, Depends(session)]
