"""FastAPI dependencies of the catalog's handlers: the process state its start hook built
(``state.on_start``), its settings, the session factory and the name-check context. Handlers take
these as ``Annotated`` parameters instead of reaching ``request.app.state`` by hand."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.catalog.config import Settings
from wemcp.catalog.names import NameContext, context_of
from wemcp.catalog.state import CatalogState, of


def _state(request: Request) -> CatalogState:
    return of(request.app.state.runtime)


def _settings(state: Annotated[CatalogState, Depends(_state)]) -> Settings:
    return state.settings


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] | None = request.app.state.runtime.sessions
    if sessions is None:
        raise RuntimeError("the catalog runs with a database; its runtime has no session factory")
    return sessions


def _names(request: Request) -> NameContext:
    return context_of(request)


State = Annotated[CatalogState, Depends(_state)]
CatalogSettings = Annotated[Settings, Depends(_settings)]
Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(_sessions)]
Names = Annotated[NameContext, Depends(_names)]
