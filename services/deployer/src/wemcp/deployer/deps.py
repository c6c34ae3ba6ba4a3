"""FastAPI dependencies of the deployer's handlers: the session factory and the deployment worker
(``Orchestrator``, started by ``main.start_worker``; None while it is not running). Handlers take them
as ``Annotated`` parameters instead of reaching ``request.app.state`` by hand."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from wemcp.common.deps import Sessions
from wemcp.deployer.service import Orchestrator

__all__ = ["KEY", "Sessions", "Worker"]

KEY = "orchestrator"  # where main.start_worker keeps the worker in runtime.extras


def _orchestrator(request: Request) -> Orchestrator | None:
    orch: Orchestrator | None = request.app.state.runtime.extras.get(KEY)
    return orch


Worker = Annotated[Orchestrator | None, Depends(_orchestrator)]
