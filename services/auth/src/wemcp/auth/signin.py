"""Development sign-in: one-time links printed by ``make admin`` (``wemcp.auth.admin signin-link``).

On a stack with no OAuth provider configured, the web console still needs a way in. An operator with
the database (the same person who may create a superadmin) mints a link
``<public_url>/signin#token=<raw>``: the token sits in the URL fragment, which browsers never send to
a server, so it is in no access log; the console POSTs it to :func:`exchange` once. Only the SHA-256
is stored; a link works once and for at most ten minutes; production stacks neither mint nor accept
them (404, as if the route did not exist)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.auth import repository, service
from wemcp.auth.api import _guarded, _set_refresh_cookie
from wemcp.auth.deps import State
from wemcp.auth.models import SigninLink, User
from wemcp.auth.tokens import SigningKeys, TokenPair, start_session
from wemcp.common.errors import NotFound, Unauthorized

MAX_LIFETIME = timedelta(minutes=10)
router = APIRouter(prefix="/api/v1", tags=["auth"])


class LinkIn(BaseModel):
    token: Annotated[str, StringConstraints(min_length=20, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")]


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


async def mint(session: AsyncSession, user: User, lifetime: timedelta = MAX_LIFETIME) -> str:
    """A new link token for ``user`` (the raw value; only its hash is kept)."""
    raw = secrets.token_urlsafe(32)
    await repository.add(session, SigninLink(user_id=user.id, token_hash=_hash(raw),
                                             expires_at=datetime.now(UTC) + min(lifetime, MAX_LIFETIME)))
    return raw


async def redeem(session: AsyncSession, keys: SigningKeys, raw: str) -> tuple[User, TokenPair]:
    """Use a link once: its user and a new session's token pair."""
    link = await repository.signin_link_for_update(session, _hash(raw))
    now = datetime.now(UTC)
    if link is None or link.used_at is not None or link.expires_at <= now:
        raise Unauthorized("this sign-in link is unknown, used or expired: ask for a new one (make admin)")
    link.used_at = now
    user = await repository.user(session, link.user_id)
    if user is None or user.disabled:
        raise Unauthorized("this account cannot sign in")
    return user, await start_session(session, keys, user)


@router.post("/auth/signin-link", summary="Exchange a one-time development sign-in link (make admin)")
async def exchange(body: LinkIn, request: Request, st: State) -> JSONResponse:
    if st.settings.environment == "production":
        raise NotFound("no such route")

    async def run() -> tuple[User, TokenPair]:
        async with st.sessions() as s, s.begin():
            return await redeem(s, st.keys, body.token)

    user, pair = await _guarded(request, run, st)
    resp = JSONResponse({**pair.body(), "user": service.user_read(user)})
    _set_refresh_cookie(st, resp, pair.refresh_token)
    return resp
