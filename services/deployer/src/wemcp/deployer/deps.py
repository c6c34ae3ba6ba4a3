"""FastAPI dependencies of the deployer's handlers: the session factory and the deployment worker
(``Orchestrator``, started by ``main.start_worker``; None while it is not running). Handlers take them
as ``Annotated`` parameters instead of reaching ``request.app.state`` by hand."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.deployer.service import Orchestrator

KEY = "orchestrator"  # where main.start_worker keeps the worker in runtime.extras


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] | None = request.app.state.runtime.sessions
    if sessions is None:
        raise RuntimeError("the deployer runs with a database; its runtime has no session factory")
    return sessions


def _orchestrator(request: Request) -> Orchestrator | None:
    orch: Orchestrator | None = request.app.state.runtime.extras.get(KEY)
    return orch


Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(_sessions)]
Worker = Annotated[Orchestrator | None, Depends(_orchestrator)]
