"""FastAPI dependencies of the catalog's handlers: the process state its start hook built
(``state.on_start``), its settings, the session factory and the name-check context. Handlers take
these as ``Annotated`` parameters instead of reaching ``request.app.state`` by hand."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from wemcp.catalog.config import Settings
from wemcp.catalog.names import NameContext, context_of
from wemcp.catalog.state import CatalogState, of
from wemcp.common.deps import Sessions

__all__ = ["CatalogSettings", "Names", "Sessions", "State"]


def _state(request: Request) -> CatalogState:
    return of(request.app.state.runtime)


def _settings(state: Annotated[CatalogState, Depends(_state)]) -> Settings:
    return state.settings


def _names(request: Request) -> NameContext:
    return context_of(request)


State = Annotated[CatalogState, Depends(_state)]
CatalogSettings = Annotated[Settings, Depends(_settings)]
Names = Annotated[NameContext, Depends(_names)]
