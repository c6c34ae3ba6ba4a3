"""The admin system's user side and the audit log (auth keeps it).

- **Ban / unban**: a banned user (``disabled`` with ``banned_at``) cannot sign in, refresh or use an
  API key (auth's resolve refuses them); every open session is revoked (``user.session_revoked``) and
  ``user.banned`` tells the gateway to drop the user's cached keys and refuse their access tokens at
  once. Unbanning lets their API keys work again; revoked sessions stay revoked.
- **Account deletion** (by the user, or by an admin): in one transaction the user's vault secrets,
  OAuth connections, API keys, sessions and linked identities are deleted (each with the event the
  gateway needs to forget it) and the profile is blanked (login, name, e-mail, avatar); the row
  stays, disabled, so ids in other services' records stay meaningless to outsiders.
- **Audit log**: every ``admin.action_recorded`` of any service, stored once, read-only.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.auth import repository
from wemcp.auth.config import Settings
from wemcp.auth.models import (
    AuditEntry,
    Invite,
    User,
    bus_tables,
)
from wemcp.auth.service import SYSTEM_USER, _actor, fallback_avatar, me, record, require_admin, user_read
from wemcp.auth.tokens import now, revoke_family
from wemcp.common.errors import BadRequest, Conflict, Forbidden, NotFound
from wemcp.common.events.admin import AdminActionRecorded
from wemcp.common.events.users import ApiKeyRevoked, SecretChanged, UserBanned, UserDeleted
from wemcp.common.identity import ROLE_RANK
from wemcp.common.outbox import add_event

GATEWAY_LEEWAY_SECONDS = 60  # beyond the access-token lifetime (the gateway's clock leeway is 30 s)


# -- who may act on whom -------------------------------------------------------------------------

async def _admin_over(session: AsyncSession, actor_id: uuid.UUID, target_id: uuid.UUID) -> tuple[User, User]:
    """(actor, target locked): the actor is an admin now (the database's word, not a token's), the
    target exists, is not the actor and ranks below them (a superadmin acts on anyone else)."""
    actor = await _actor(session, actor_id)
    if ROLE_RANK[actor.role] < ROLE_RANK["admin"]:
        raise Forbidden("this needs the admin role")
    if actor_id == target_id:
        raise Forbidden("an admin does not act on their own account here")
    target = await repository.user_for_update(session, target_id)
    if target is None or target.id == SYSTEM_USER or target.deleted_at is not None:
        raise NotFound("no such user")
    if actor.role != "superadmin" and ROLE_RANK[target.role] >= ROLE_RANK[actor.role]:
        raise Forbidden("you can only act on accounts below your own role")
    return actor, target


async def _revoke_sessions(session: AsyncSession, settings: Settings, user_id: uuid.UUID) -> int:
    families = await repository.open_session_families(session, user_id)
    for fam in families:
        await revoke_family(session, settings, fam, user_id, "admin")
    return len(families)


def _gateway_until(settings: Settings) -> datetime:
    return now() + timedelta(seconds=settings.access_ttl_seconds + GATEWAY_LEEWAY_SECONDS)


# -- ban -----------------------------------------------------------------------------------------

async def ban(session: AsyncSession, settings: Settings, actor_id: uuid.UUID, target_id: uuid.UUID,
              reason: str) -> User:
    actor, target = await _admin_over(session, actor_id, target_id)
    if target.banned_at is not None:
        return target
    before = {"banned": False, "disabled": target.disabled}
    target.disabled, target.banned_at, target.banned_by, target.ban_reason = True, now(), actor.id, reason
    target.updated_at = now()
    sessions = await _revoke_sessions(session, settings, target.id)
    await add_event(session, bus_tables, UserBanned(user_id=target.id, banned=True, actor_id=actor.id, reason=reason,
                                                    until=_gateway_until(settings)))
    await record(session, actor, "user.ban", "user", str(target.id), before=before,
                 after={"banned": True, "sessions_revoked": sessions}, reason=reason)
    return target


async def unban(session: AsyncSession, actor_id: uuid.UUID, target_id: uuid.UUID, reason: str | None) -> User:
    actor, target = await _admin_over(session, actor_id, target_id)
    if target.banned_at is None:
        return target
    before = {"banned": True, "ban_reason": target.ban_reason}
    target.disabled, target.banned_at, target.banned_by, target.ban_reason = False, None, None, None
    target.updated_at = now()
    await add_event(session, bus_tables, UserBanned(user_id=target.id, banned=False, actor_id=actor.id, reason=reason))
    await record(session, actor, "user.unban", "user", str(target.id), before=before, after={"banned": False},
                 reason=reason)
    return target


# -- account deletion ----------------------------------------------------------------------------

async def delete_account(session: AsyncSession, settings: Settings, target_id: uuid.UUID, *,
                         actor_id: uuid.UUID | None = None, reason: str | None = None) -> dict[str, int]:
    """Delete ``target_id``'s account: by the user (``actor_id`` None) or an admin over them."""
    actor: User | None = None
    if actor_id is not None:
        actor, target = await _admin_over(session, actor_id, target_id)
    else:
        target = await repository.user_for_update(session, target_id)
        if target is None or target.deleted_at is not None or target.id == SYSTEM_USER:
            raise NotFound("no such user")
    if target.role == "superadmin":
        others = await repository.other_active_superadmins(session, target.id)
        if not others:
            raise Conflict("the last superadmin cannot be deleted; make another superadmin first")
    removed: dict[str, int] = {}
    secrets = await repository.secrets_of(session, target.id, None, ordered=False)
    for row in secrets:
        await add_event(session, bus_tables, SecretChanged(user_id=target.id, server=row.server, name=row.name,
                                                           action="deleted"))
    removed["secrets"] = len(secrets)
    await repository.delete_secrets_of(session, target.id)
    removed["connections"] = await repository.delete_connections_of(session, target.id)
    keys = await repository.api_keys_of(session, target.id, ordered=False)
    for key in keys:
        if key.revoked_at is None:
            await add_event(session, bus_tables, ApiKeyRevoked(key_id=key.id, user_id=target.id, prefix=key.prefix))
    removed["api_keys"] = len(keys)
    await repository.delete_api_keys_of(session, target.id)
    removed["sessions"] = await _revoke_sessions(session, settings, target.id)
    await repository.delete_refresh_tokens_of(session, target.id)
    removed["identities"] = await repository.delete_identities_of(session, target.id)
    await repository.revoke_invites_by(session, target.id, now())
    previous_role = target.role
    target.login = f"deleted-{target.id.hex[:12]}"
    target.name, target.email, target.avatar_url = None, None, fallback_avatar(target.id)
    target.role, target.disabled, target.deleted_at, target.updated_at = "user", True, now(), now()
    target.banned_at, target.banned_by, target.ban_reason = None, None, None
    await add_event(session, bus_tables, UserDeleted(user_id=target.id, actor_id=actor.id if actor else None,
                                                     by="admin" if actor else "self"))
    if actor is not None:
        await record(session, actor, "user.delete", "user", str(target.id), before={"role": previous_role},
                     after={"deleted": True, **removed}, reason=reason)
    return removed


# -- listing users -------------------------------------------------------------------------------

def admin_user_read(user: User) -> dict[str, Any]:
    return {**user_read(user), "banned": user.banned_at is not None,
            "banned_at": user.banned_at.isoformat() if user.banned_at else None, "ban_reason": user.ban_reason,
            "deleted": user.deleted_at is not None}


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps([str(p) for p in parts]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, n: int) -> list[str]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        assert isinstance(parts, list) and len(parts) == n and all(isinstance(p, str) for p in parts)
        return parts
    except Exception:
        raise BadRequest("cursor: not a cursor this server issued") from None


class _Listed(Protocol):
    @property
    def created_at(self) -> datetime: ...

    @property
    def id(self) -> uuid.UUID: ...


T = TypeVar("T", bound=_Listed)


def _after(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """Where a page of rows listed newest first ends (their ``created_at`` and ``id``), from the cursor
    :func:`_newest_first` made; ``None``: the first page."""
    if not cursor:
        return None
    at, row_id = decode_cursor(cursor, 2)
    try:
        return datetime.fromisoformat(at), uuid.UUID(row_id)
    except ValueError:
        raise BadRequest("cursor: not a cursor this server issued") from None


def _newest_first(rows: Sequence[T], limit: int) -> tuple[Sequence[T], str | None]:
    """A page of the ``limit + 1`` rows read (newest first) and the cursor of the next, if there is one."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at.isoformat(), rows[-1].id)


async def search_users(session: AsyncSession, *, q: str | None, role: str | None, banned: bool | None,
                       deleted: bool, cursor: str | None, limit: int) -> dict[str, Any]:
    total, rows = await repository.users_page(session, q=q, role=role, banned=banned, deleted=deleted,
                                              hidden=SYSTEM_USER, after=_after(cursor), limit=limit + 1)
    page, next_cursor = _newest_first(rows, limit)
    return {"items": [admin_user_read(u) for u in page], "total": total, "next_cursor": next_cursor}


# -- the audit log -------------------------------------------------------------------------------

async def store_action(event: AdminActionRecorded, session: AsyncSession) -> None:
    """The consumer of ``admin.action_recorded``: stores each event once (a redelivery is a no-op)."""
    await repository.store_audit_entry(
        session, event_id=event.event_id, service=event.service[:40], action=event.action[:80],
        actor_id=event.actor_id, actor_role=event.actor_role, target_type=event.target_type[:40],
        target_id=event.target_id[:300], before=event.before, after=event.after, reason=event.reason,
        occurred_at=event.occurred_at)


def audit_read(e: AuditEntry) -> dict[str, Any]:
    return {"seq": e.seq, "event_id": str(e.event_id), "service": e.service, "action": e.action,
            "actor_id": str(e.actor_id) if e.actor_id else None, "actor_role": e.actor_role,
            "target_type": e.target_type, "target_id": e.target_id, "before": e.before, "after": e.after,
            "reason": e.reason, "occurred_at": e.occurred_at.isoformat(), "recorded_at": e.recorded_at.isoformat()}


async def read_audit(session: AsyncSession, *, filters: dict[str, Any], since: datetime | None,
                     until: datetime | None, cursor: str | None, limit: int) -> dict[str, Any]:
    """Newest first; the cursor is the last ``seq`` seen (stable while rows are appended)."""
    before_seq = None
    if cursor:
        [seq] = decode_cursor(cursor, 1)
        if not seq.isdigit():
            raise BadRequest("cursor: not a cursor this server issued")
        before_seq = int(seq)
    rows = await repository.audit_page(session, filters=filters, since=since, until=until, before_seq=before_seq,
                                       limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [audit_read(e) for e in rows], "next_cursor": encode_cursor(rows[-1].seq) if more else None}


# -- what the admin handlers call (the SQL is the repository's) ----------------------------------


async def admin_user(session: AsyncSession, user_id: uuid.UUID) -> dict[str, Any]:
    """One user with their linked identities; the system principal is no user."""
    user = await repository.user(session, user_id)
    if user is None or user.id == SYSTEM_USER:
        raise NotFound("no such user")
    return {**await me(session, user_id), **admin_user_read(user)}


def admin_invite_read(i: Invite) -> dict[str, Any]:
    state = "revoked" if i.revoked_at else "used_up" if i.uses >= i.max_uses else \
        "expired" if i.expires_at <= now() else "open"
    return {"id": str(i.id), "role": i.role, "email": i.email, "created_by": str(i.created_by),
            "created_at": i.created_at.isoformat(), "expires_at": i.expires_at.isoformat(),
            "max_uses": i.max_uses, "uses": i.uses, "state": state,
            "used_at": i.used_at.isoformat() if i.used_at else None,
            "revoked_at": i.revoked_at.isoformat() if i.revoked_at else None}


async def list_invites(session: AsyncSession, cursor: str | None, limit: int) -> dict[str, Any]:
    """Every invite, newest first, a page at a time."""
    rows = await repository.invites_page(session, _after(cursor), limit + 1)
    page, next_cursor = _newest_first(rows, limit)
    return {"items": [admin_invite_read(i) for i in page], "next_cursor": next_cursor}


async def revoke_invite(session: AsyncSession, admin_id: uuid.UUID, invite_id: uuid.UUID) -> None:
    actor = await require_admin(session, admin_id)
    invite = await repository.invite_for_update(session, invite_id)
    if invite is None:
        raise NotFound("no such invite")
    if invite.revoked_at is None:
        invite.revoked_at = now()
        await record(session, actor, "invite.revoke", "invite", str(invite.id),
                     before={"uses": invite.uses, "max_uses": invite.max_uses}, after={"revoked": True})
