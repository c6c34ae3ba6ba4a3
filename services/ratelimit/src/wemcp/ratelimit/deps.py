"""The ratelimit service's process state and database session as FastAPI dependencies. Handlers
declare ``st: State``, ``s: Session`` or ``quota: Quota`` in their signature instead of reaching
``request.app.state``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.common.deps import Session  # one session per request, re-exported for the handlers
from wemcp.quota.client import QuotaClient
from wemcp.ratelimit.config import Settings

__all__ = ["KEY", "Quota", "RatelimitState", "Session", "State"]

KEY = "ratelimit"  # where main._start keeps the state in runtime.extras


@dataclass
class RatelimitState:
    """What one ratelimit process holds for its lifetime (built by ``main._start``); what publishing
    the policy snapshot needs."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis


async def _state(request: Request) -> RatelimitState:
    st: RatelimitState = request.app.state.runtime.extras[KEY]
    return st


async def _quota(request: Request) -> QuotaClient:
    # looked up per request, not kept in the state: a test swaps it for a client on an unreachable Redis
    quota: QuotaClient = request.app.state.runtime.extras["quota"]
    return quota


State = Annotated[RatelimitState, Depends(_state)]
Quota = Annotated[QuotaClient, Depends(_quota)]
