"""All SQL the auth service's HTTP handlers need: each function one statement (or one row fetch) on
the caller's session; no decisions, no events (those are the service's)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.auth.models import (
    ApiKey,
    Invite,
    OAuthApp,
    OAuthConnection,
    RefreshToken,
    SigninLink,
    User,
    UserIdentity,
)


async def user(s: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await s.get(User, user_id)


async def add(s: AsyncSession, row: Any) -> None:
    s.add(row)
    await s.flush()


async def remove(s: AsyncSession, row: Any) -> None:
    await s.delete(row)


async def open_session_families(s: AsyncSession, user_id: uuid.UUID) -> Sequence[uuid.UUID]:
    query = (select(RefreshToken.family_id)
             .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None)).distinct())
    return (await s.execute(query)).scalars().all()


async def invites_created_by(s: AsyncSession, user_id: uuid.UUID, limit: int) -> Sequence[Invite]:
    query = select(Invite).where(Invite.created_by == user_id).order_by(Invite.created_at.desc()).limit(limit)
    return (await s.execute(query)).scalars().all()


async def invites_page(s: AsyncSession, after: tuple[datetime, uuid.UUID] | None, limit: int) -> Sequence[Invite]:
    """Newest first; ``after`` is the (created_at, id) of the last row of the previous page."""
    query = select(Invite)
    if after is not None:
        at, iid = after
        query = query.where((Invite.created_at < at) | ((Invite.created_at == at) & (Invite.id > iid)))
    return (await s.execute(query.order_by(Invite.created_at.desc(), Invite.id).limit(limit))).scalars().all()


async def invite_for_update(s: AsyncSession, invite_id: uuid.UUID) -> Invite | None:
    query = select(Invite).where(Invite.id == invite_id).with_for_update()
    return (await s.execute(query)).scalar_one_or_none()


async def api_keys_of(s: AsyncSession, user_id: uuid.UUID) -> Sequence[ApiKey]:
    query = select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at.desc())
    return (await s.execute(query)).scalars().all()


async def oauth_app_exists(s: AsyncSession, slug: str) -> bool:
    return (await s.execute(select(OAuthApp.id).where(OAuthApp.slug == slug))).first() is not None


async def oauth_apps(s: AsyncSession) -> Sequence[OAuthApp]:
    return (await s.execute(select(OAuthApp).order_by(OAuthApp.slug))).scalars().all()


async def connections_of(s: AsyncSession, user_id: uuid.UUID) -> list[tuple[OAuthConnection, OAuthApp]]:
    query = (select(OAuthConnection, OAuthApp).join(OAuthApp)
             .where(OAuthConnection.user_id == user_id).order_by(OAuthApp.slug))
    return [(conn, app) for conn, app in (await s.execute(query)).all()]


async def connection(s: AsyncSession, user_id: uuid.UUID, app_id: uuid.UUID) -> OAuthConnection | None:
    query = select(OAuthConnection).where(OAuthConnection.user_id == user_id, OAuthConnection.app_id == app_id)
    return (await s.execute(query)).scalar_one_or_none()


async def identities_of(s: AsyncSession, user_id: uuid.UUID) -> Sequence[UserIdentity]:
    query = select(UserIdentity).where(UserIdentity.user_id == user_id).order_by(UserIdentity.created_at)
    return (await s.execute(query)).scalars().all()


async def signin_link_for_update(s: AsyncSession, token_hash: str) -> SigninLink | None:
    query = select(SigninLink).where(SigninLink.token_hash == token_hash).with_for_update()
    return (await s.execute(query)).scalar_one_or_none()
