"""The auth service's process state and database session as FastAPI dependencies. Handlers declare
``st: State`` or ``s: Session`` in their signature instead of reaching ``request.app.state``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.auth.config import Settings
from wemcp.auth.tokens import SigningKeys
from wemcp.common.sealing import Keyring


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


async def session(st: Annotated[AuthState, Depends(state)]) -> AsyncIterator[AsyncSession]:
    """One session per request; a handler that writes opens its transaction with ``s.begin()``."""
    async with st.sessions() as s:
        yield s


State = Annotated[AuthState, Depends(state)]
Session = Annotated[AsyncSession, Depends(session)]
