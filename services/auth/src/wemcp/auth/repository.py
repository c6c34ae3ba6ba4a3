"""All SQL the auth service's HTTP handlers need: each function one statement (or one row fetch) on
the caller's session; no decisions, no events (those are the service's)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.auth.models import (
    ApiKey,
    AuditEntry,
    Invite,
    OAuthApp,
    OAuthConnection,
    RefreshToken,
    SigningKey,
    SigninLink,
    User,
    UserIdentity,
    VaultSecret,
)


async def user(s: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await s.get(User, user_id)


def stage(s: AsyncSession, row: Any) -> None:
    """Add a new row; it is written at the next flush."""
    s.add(row)


async def add(s: AsyncSession, row: Any) -> None:
    """Add a new row and write it now (its defaults and ids are then known)."""
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


async def api_keys_of(s: AsyncSession, user_id: uuid.UUID, *, ordered: bool = True) -> Sequence[ApiKey]:
    query = select(ApiKey).where(ApiKey.user_id == user_id)
    if ordered:
        query = query.order_by(ApiKey.created_at.desc())
    return (await s.execute(query)).scalars().all()


async def oauth_app_exists(s: AsyncSession, slug: str) -> bool:
    return (await s.execute(select(OAuthApp.id).where(OAuthApp.slug == slug))).first() is not None


async def oauth_apps(s: AsyncSession) -> Sequence[OAuthApp]:
    return (await s.execute(select(OAuthApp).order_by(OAuthApp.slug))).scalars().all()


async def connections_of(s: AsyncSession, user_id: uuid.UUID) -> list[tuple[OAuthConnection, OAuthApp]]:
    query = (select(OAuthConnection, OAuthApp).join(OAuthApp)
             .where(OAuthConnection.user_id == user_id).order_by(OAuthApp.slug))
    return [(conn, app) for conn, app in (await s.execute(query)).all()]


async def connection(s: AsyncSession, user_id: uuid.UUID, app_id: uuid.UUID, *,
                     for_update: bool = False) -> OAuthConnection | None:
    query = select(OAuthConnection).where(OAuthConnection.user_id == user_id, OAuthConnection.app_id == app_id)
    if for_update:
        query = query.with_for_update()
    return (await s.execute(query)).scalar_one_or_none()


async def identities_of(s: AsyncSession, user_id: uuid.UUID) -> Sequence[UserIdentity]:
    query = select(UserIdentity).where(UserIdentity.user_id == user_id).order_by(UserIdentity.created_at)
    return (await s.execute(query)).scalars().all()


async def signin_link_for_update(s: AsyncSession, token_hash: str) -> SigninLink | None:
    query = select(SigninLink).where(SigninLink.token_hash == token_hash).with_for_update()
    return (await s.execute(query)).scalar_one_or_none()


# -- users and identities ------------------------------------------------------------------------


async def user_for_update(s: AsyncSession, user_id: uuid.UUID) -> User | None:
    return (await s.execute(select(User).where(User.id == user_id).with_for_update())).scalar_one_or_none()


async def login_taken(s: AsyncSession, login: str) -> bool:
    return (await s.execute(select(User.id).where(User.login == login))).first() is not None


async def ensure_user(s: AsyncSession, **values: Any) -> None:
    """Insert a user row with these values unless one with its id exists."""
    await s.execute(pg_insert(User).values(**values).on_conflict_do_nothing(index_elements=[User.id]))


async def identity(s: AsyncSession, provider: str, subject: str) -> UserIdentity | None:
    query = select(UserIdentity).where(UserIdentity.provider == provider, UserIdentity.subject == subject)
    return (await s.execute(query)).scalar_one_or_none()


# -- invites -------------------------------------------------------------------------------------


def _open(code_hash: str, at: datetime) -> Any:
    return (Invite.code_hash == code_hash) & (Invite.uses < Invite.max_uses) & (Invite.expires_at > at) & \
        Invite.revoked_at.is_(None)


async def open_invite(s: AsyncSession, code_hash: str, at: datetime) -> Invite | None:
    """The invite with this code if it is neither used up, expired nor revoked at ``at``."""
    return (await s.execute(select(Invite).where(_open(code_hash, at)))).scalar_one_or_none()


async def use_invite(s: AsyncSession, code_hash: str, user_id: uuid.UUID, at: datetime) -> tuple[str, uuid.UUID] | None:
    """Take one use of an open invite in one conditional UPDATE (concurrent accepts race on it):
    its (role, created_by), or None when it is not open."""
    row = (await s.execute(
        update(Invite).where(_open(code_hash, at))
        .values(used_at=at, used_by=user_id, uses=Invite.uses + 1)
        .returning(Invite.role, Invite.created_by)
    )).first()
    return None if row is None else (row[0], row[1])


# -- API keys ------------------------------------------------------------------------------------


async def api_key_for_update(s: AsyncSession, user_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey | None:
    query = select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id).with_for_update()
    return (await s.execute(query)).scalar_one_or_none()


async def live_api_key(s: AsyncSession, key_hash: str) -> tuple[ApiKey, User] | None:
    """A key that is not revoked, with its user (expiry and bans are the caller's to judge)."""
    query = (select(ApiKey, User).join(User, User.id == ApiKey.user_id)
             .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)))
    row = (await s.execute(query)).first()
    return None if row is None else (row[0], row[1])


# -- the vault -----------------------------------------------------------------------------------


async def secret_for_update(s: AsyncSession, user_id: uuid.UUID, server: str, name: str) -> VaultSecret | None:
    query = (select(VaultSecret)
             .where(VaultSecret.user_id == user_id, VaultSecret.server == server, VaultSecret.name == name)
             .with_for_update())
    return (await s.execute(query)).scalar_one_or_none()


async def secrets_of(s: AsyncSession, user_id: uuid.UUID, server: str | None, *,
                     ordered: bool = True) -> Sequence[VaultSecret]:
    query = select(VaultSecret).where(VaultSecret.user_id == user_id)
    if server is not None:
        query = query.where(VaultSecret.server == server)
    if ordered:
        query = query.order_by(VaultSecret.server, VaultSecret.name)
    return (await s.execute(query)).scalars().all()


# -- third-party OAuth apps ----------------------------------------------------------------------


async def oauth_app(s: AsyncSession, slug: str) -> OAuthApp | None:
    return (await s.execute(select(OAuthApp).where(OAuthApp.slug == slug))).scalar_one_or_none()


# -- the admin system ----------------------------------------------------------------------------


async def other_active_superadmins(s: AsyncSession, user_id: uuid.UUID) -> int:
    query = select(func.count()).select_from(User).where(
        User.role == "superadmin", User.id != user_id, User.deleted_at.is_(None), User.disabled.is_(False))
    return int((await s.execute(query)).scalar_one())


async def _delete_where(s: AsyncSession, table: Any, *conds: Any) -> int:
    result = await s.execute(delete(table).where(*conds))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def delete_secrets_of(s: AsyncSession, user_id: uuid.UUID) -> int:
    return await _delete_where(s, VaultSecret, VaultSecret.user_id == user_id)


async def delete_connections_of(s: AsyncSession, user_id: uuid.UUID) -> int:
    return await _delete_where(s, OAuthConnection, OAuthConnection.user_id == user_id)


async def delete_api_keys_of(s: AsyncSession, user_id: uuid.UUID) -> int:
    return await _delete_where(s, ApiKey, ApiKey.user_id == user_id)


async def delete_refresh_tokens_of(s: AsyncSession, user_id: uuid.UUID) -> int:
    return await _delete_where(s, RefreshToken, RefreshToken.user_id == user_id)


async def delete_identities_of(s: AsyncSession, user_id: uuid.UUID) -> int:
    return await _delete_where(s, UserIdentity, UserIdentity.user_id == user_id)


async def revoke_invites_by(s: AsyncSession, user_id: uuid.UUID, at: datetime) -> None:
    await s.execute(update(Invite).where(Invite.created_by == user_id, Invite.revoked_at.is_(None))
                    .values(revoked_at=at))


async def users_page(s: AsyncSession, *, q: str | None, role: str | None, banned: bool | None, deleted: bool,
                     hidden: uuid.UUID, after: tuple[datetime, uuid.UUID] | None,
                     limit: int) -> tuple[int, Sequence[User]]:
    """(how many match, one page newest first) of users by login, name, e-mail or a linked provider
    login (``q``), role, ban; ``hidden`` (the system principal) never."""
    conds: list[Any] = [User.id != hidden]
    if q:
        like = f"%{q.replace('%', '').replace('_', '')}%"
        conds.append(or_(User.login.ilike(like), User.name.ilike(like), User.email.ilike(like),
                         User.id.in_(select(UserIdentity.user_id).where(UserIdentity.login.ilike(like)))))
    if role:
        conds.append(User.role == role)
    if banned is not None:
        conds.append(User.banned_at.is_not(None) if banned else User.banned_at.is_(None))
    if not deleted:
        conds.append(User.deleted_at.is_(None))
    total = int((await s.execute(select(func.count()).select_from(User).where(*conds))).scalar_one())
    query = select(User).where(*conds)
    if after is not None:
        at, uid = after
        query = query.where(or_(User.created_at < at, (User.created_at == at) & (User.id > uid)))
    rows = (await s.execute(query.order_by(User.created_at.desc(), User.id).limit(limit))).scalars().all()
    return total, rows


async def store_audit_entry(s: AsyncSession, **values: Any) -> None:
    """Store an audit entry once per ``event_id`` (a redelivery is a no-op)."""
    await s.execute(pg_insert(AuditEntry).values(**values).on_conflict_do_nothing(index_elements=[AuditEntry.event_id]))


async def audit_page(s: AsyncSession, *, filters: dict[str, Any], since: datetime | None, until: datetime | None,
                     before_seq: int | None, limit: int) -> Sequence[AuditEntry]:
    """Newest first (by ``seq``), below ``before_seq`` when given."""
    conds: list[Any] = []
    for name in ("service", "action", "actor_id", "target_type", "target_id"):
        if filters.get(name) is not None:
            conds.append(getattr(AuditEntry, name) == filters[name])
    if filters.get("action_prefix"):
        conds.append(AuditEntry.action.startswith(filters["action_prefix"], autoescape=True))
    if since is not None:
        conds.append(AuditEntry.occurred_at >= since)
    if until is not None:
        conds.append(AuditEntry.occurred_at < until)
    if before_seq is not None:
        conds.append(AuditEntry.seq < before_seq)
    query = select(AuditEntry).where(*conds).order_by(AuditEntry.seq.desc()).limit(limit)
    return (await s.execute(query)).scalars().all()


# -- signing keys and refresh tokens -------------------------------------------------------------


async def lock_signing_keys(s: AsyncSession) -> None:
    """Serialise creating the first signing key across processes (until the transaction ends)."""
    await s.execute(text("SELECT pg_advisory_xact_lock(hashtext('wemcp-auth-signing-keys'))"))


async def active_signing_key_exists(s: AsyncSession) -> bool:
    return (await s.execute(select(SigningKey.kid).where(SigningKey.retired_at.is_(None)))).first() is not None


async def signing_keys(s: AsyncSession) -> Sequence[SigningKey]:
    return (await s.execute(select(SigningKey).order_by(SigningKey.created_at.desc()))).scalars().all()


async def retire_signing_keys(s: AsyncSession, at: datetime) -> None:
    await s.execute(update(SigningKey).where(SigningKey.retired_at.is_(None)).values(retired_at=at))


async def refresh_token_for_update(s: AsyncSession, token_hash: str) -> RefreshToken | None:
    query = select(RefreshToken).where(RefreshToken.token_hash == token_hash).with_for_update()
    return (await s.execute(query)).scalar_one_or_none()


async def revoke_refresh_family(s: AsyncSession, family: uuid.UUID, at: datetime) -> int:
    return await _revoke_where(s, RefreshToken.family_id == family, at)


async def _revoke_where(s: AsyncSession, cond: Any, at: datetime) -> int:
    result = await s.execute(update(RefreshToken).where(cond, RefreshToken.revoked_at.is_(None)).values(revoked_at=at))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def refresh_family_of(s: AsyncSession, token_hash: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """(family, user) of a refresh token."""
    query = select(RefreshToken.family_id, RefreshToken.user_id).where(RefreshToken.token_hash == token_hash)
    row = (await s.execute(query)).first()
    return (row[0], row[1]) if row else None


# -- third-party connections ---------------------------------------------------------------------


async def connection_for_server(s: AsyncSession, user_id: uuid.UUID,
                                server: str) -> tuple[OAuthConnection, OAuthApp] | None:
    """The user's connection (locked) to the first app, by slug, that lists ``server``."""
    query = (select(OAuthConnection, OAuthApp).join(OAuthApp)
             .where(OAuthConnection.user_id == user_id, OAuthApp.servers.contains([server]))
             .order_by(OAuthApp.slug).limit(1).with_for_update(of=OAuthConnection))
    row = (await s.execute(query)).first()
    return None if row is None else (row[0], row[1])


async def connections_expiring(s: AsyncSession, horizon: datetime, retry_after: datetime,
                               limit: int) -> Sequence[uuid.UUID]:
    """Connections that expire by ``horizon`` and did not fail to refresh after ``retry_after``."""
    query = (select(OAuthConnection.id)
             .where(OAuthConnection.expires_at.is_not(None), OAuthConnection.expires_at <= horizon,
                    or_(OAuthConnection.refresh_failed_at.is_(None), OAuthConnection.refresh_failed_at < retry_after))
             .limit(limit))
    return (await s.execute(query)).scalars().all()


async def connection_unless_locked(s: AsyncSession, conn_id: uuid.UUID) -> tuple[OAuthConnection, OAuthApp] | None:
    """A connection and its app, locked; None when gone or when another process holds it."""
    query = (select(OAuthConnection, OAuthApp).join(OAuthApp).where(OAuthConnection.id == conn_id)
             .with_for_update(of=OAuthConnection, skip_locked=True))
    row = (await s.execute(query)).first()
    return None if row is None else (row[0], row[1])


# -- the operator command ------------------------------------------------------------------------


async def user_by_login(s: AsyncSession, login: str, *, for_update: bool = False) -> User | None:
    query = select(User).where(User.login == login)
    if for_update:
        query = query.with_for_update()
    return (await s.execute(query)).scalar_one_or_none()


async def all_rows_for_update(s: AsyncSession, model: Any) -> Sequence[Any]:
    """Every row of a table, locked (the KEK rotation re-wraps them all)."""
    return (await s.execute(select(model).with_for_update())).scalars().all()
