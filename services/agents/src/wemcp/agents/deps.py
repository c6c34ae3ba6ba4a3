"""FastAPI dependencies of the agents service's handlers: the process state its start hook built
(``main._open``: settings, sessions, the provider client, the quota, the MCP pool). Handlers take it
as an ``Annotated`` parameter instead of reaching ``request.app.state`` by hand."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from wemcp.agents.service import AgentsState

KEY = "agents"  # where main._open keeps the state in runtime.extras


def _state(request: Request) -> AgentsState:
    state: AgentsState | None = request.app.state.runtime.extras.get(KEY)
    if state is None:
        raise RuntimeError("agents state is not initialised (the service's start hook did not run)")
    return state


State = Annotated[AgentsState, Depends(_state)]
