"""The auth service's process state and database session as FastAPI dependencies. Handlers declare
``st: State`` or ``s: Session`` in their signature instead of reaching ``request.app.state``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.auth.config import Settings
from wemcp.auth.tokens import SigningKeys
from wemcp.common.deps import Session  # one session per request, re-exported for the handlers
from wemcp.common.sealing import Keyring

__all__ = ["AuthState", "Session", "State", "state"]


@dataclass
class AuthState:
    """What one auth process holds for its lifetime (built by ``main._open``)."""

    settings: Settings
    keyring: Keyring
    keys: SigningKeys
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis


def state(request: Request) -> AuthState:
    st: AuthState = request.app.state.runtime.extras["auth"]
    return st


State = Annotated[AuthState, Depends(state)]
