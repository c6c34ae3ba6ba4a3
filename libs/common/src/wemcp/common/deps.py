"""The route dependencies every service's ``deps.py`` shares: the process's
:class:`~wemcp.common.service.Runtime`, its session factory and one database session per request.

A service's ``deps.py`` re-exports what its handlers use (``Sessions``, ``Session``) next to its own
state and settings, so a handler declares ``s: Session`` instead of reaching ``request.app.state``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.common.service import Runtime


def runtime(request: Request) -> Runtime:
    """The process's runtime, as ``build_app`` left it on the app."""
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeOf = Annotated[Runtime, Depends(runtime)]


def runtime_sessions(rt: RuntimeOf) -> async_sessionmaker[AsyncSession]:
    """The runtime's session factory: where a handler that needs more than the request's session (a
    streamed export, a change then a fresh read of its result) opens its own."""
    if rt.sessions is None:
        raise RuntimeError(f"{rt.spec.name} runs with a database; its runtime has no session factory")
    return rt.sessions


Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(runtime_sessions)]


async def request_session(sessions: Sessions) -> AsyncIterator[AsyncSession]:
    """One session per request; a handler that writes opens its transaction with ``s.begin()``."""
    async with sessions() as s:
        yield s


Session = Annotated[AsyncSession, Depends(request_session)]
