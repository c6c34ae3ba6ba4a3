"""The goods service's process state and database session as FastAPI dependencies. Handlers declare
``s: Session``, ``sessions: Sessions`` or ``settings: GoodsSettings`` in their signature instead of
reaching ``request.app.state``. goods keeps no state of its own: the runtime's session factory and
settings are all it needs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.common.service import Runtime
from wemcp.goods.config import Settings


def _runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def _settings(rt: Annotated[Runtime, Depends(_runtime)]) -> Settings:
    settings = rt.settings
    if not isinstance(settings, Settings):
        raise RuntimeError("the goods service runs with goods' settings (wemcp.goods.config.Settings)")
    return settings


def _sessions(rt: Annotated[Runtime, Depends(_runtime)]) -> async_sessionmaker[AsyncSession]:
    if rt.sessions is None:
        raise RuntimeError("goods runs with a database; its runtime has no session factory")
    return rt.sessions


async def _session(
    sessions: Annotated[async_sessionmaker[AsyncSession], Depends(_sessions)],
) -> AsyncIterator[AsyncSession]:
    """One session per request; a handler that writes opens its transaction with ``s.begin()``."""
    async with sessions() as s:
        yield s


GoodsSettings = Annotated[Settings, Depends(_settings)]
# a handler that needs more than one session (a change, then a fresh read of its result) opens them
Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(_sessions)]
Session = Annotated[AsyncSession, Depends(_session)]
