"""Auth's part of the admin system (``/api/v1/admin/users``, ``/admin/audit``, ``/admin/invites``) and
the user's own account deletion (``DELETE /api/v1/me``). Every admin route needs the admin role as
the database knows it now (a token minted before a demotion does not do)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select

from wemcp.auth import moderation, service
from wemcp.auth.api import REFRESH_COOKIE
from wemcp.auth.models import Invite, User
from wemcp.auth.schemas import BanIn, ReasonIn, Role, RoleUpdate
from wemcp.auth.tokens import now
from wemcp.common.errors import BadRequest, NotFound
from wemcp.common.identity import AdminUser, CurrentUser

admin_router = APIRouter(prefix="/api/v1", tags=["admin"])

Cursor = Annotated[str | None, Query(max_length=500)]
Limit = Annotated[int, Query(ge=1, le=100)]


def _st(request: Request) -> Any:
    return request.app.state.runtime.extras["auth"]


async def _admin(request: Request, who: Any) -> None:
    async with _st(request).sessions() as s:
        await service.require_admin(s, who.user_id)


# -- users ---------------------------------------------------------------------------------------

@admin_router.get("/admin/users", summary="Search users (admins)")
async def list_users(request: Request, who: AdminUser,
                     q: Annotated[str | None, Query(max_length=200)] = None, role: Role | None = None,
                     banned: bool | None = None, deleted: bool = False,
                     cursor: Cursor = None, limit: Limit = 50) -> dict[str, Any]:
    """By login, name, e-mail or a linked provider login (``q``), role, ban; newest first."""
    await _admin(request, who)
    async with _st(request).sessions() as s:
        return await moderation.search_users(s, q=q, role=role, banned=banned, deleted=deleted, cursor=cursor,
                                             limit=limit)


@admin_router.get("/admin/users/{user_id}", summary="One user with their linked identities (admins)")
async def get_user(user_id: uuid.UUID, request: Request, who: AdminUser) -> dict[str, Any]:
    await _admin(request, who)
    async with _st(request).sessions() as s:
        user = await s.get(User, user_id)
        if user is None or user.id == service.SYSTEM_USER:
            raise NotFound("no such user")
        return {**await service.me(s, user_id), **moderation.admin_user_read(user)}


@admin_router.put("/admin/users/{user_id}/role", summary="Change a user's role (admins; below their own)")
async def put_role(user_id: uuid.UUID, body: RoleUpdate, request: Request, who: AdminUser) -> dict[str, Any]:
    async with _st(request).sessions() as s, s.begin():
        user = await service.set_role(s, who.user_id, user_id, body.role, body.reason)
        return moderation.admin_user_read(user)


@admin_router.post("/admin/users/{user_id}/ban", summary="Ban a user: keys and sessions stop working (admins)")
async def ban_user(user_id: uuid.UUID, body: BanIn, request: Request, who: AdminUser) -> dict[str, Any]:
    st = _st(request)
    async with st.sessions() as s, s.begin():
        return moderation.admin_user_read(await moderation.ban(s, st.settings, who.user_id, user_id, body.reason))


@admin_router.post("/admin/users/{user_id}/unban", summary="Lift a ban (admins)")
async def unban_user(user_id: uuid.UUID, request: Request, who: AdminUser,
                     body: ReasonIn | None = None) -> dict[str, Any]:
    async with _st(request).sessions() as s, s.begin():
        user = await moderation.unban(s, who.user_id, user_id, body.reason if body else None)
        return moderation.admin_user_read(user)


@admin_router.delete("/admin/users/{user_id}", summary="Delete a user's account (admins)")
async def delete_user(user_id: uuid.UUID, request: Request, who: AdminUser,
                      reason: Annotated[str | None, Query(max_length=2000)] = None) -> dict[str, Any]:
    st = _st(request)
    async with st.sessions() as s, s.begin():
        removed = await moderation.delete_account(s, st.settings, user_id, actor_id=who.user_id, reason=reason)
    return {"id": str(user_id), "deleted": True, "removed": removed}


@admin_router.delete("/me", summary="Delete my account (secrets, keys, sessions at once)")
async def delete_me(request: Request, who: CurrentUser) -> JSONResponse:
    st = _st(request)
    async with st.sessions() as s, s.begin():
        removed = await moderation.delete_account(s, st.settings, who.user_id)
    resp = JSONResponse({"id": str(who.user_id), "deleted": True, "removed": removed})
    resp.delete_cookie(REFRESH_COOKIE, path="/api/v1/auth")  # the browser's session is over too
    return resp


# -- the audit log -------------------------------------------------------------------------------

@admin_router.get("/admin/audit", summary="The audit log of admin actions, newest first (admins; read-only)")
async def audit(request: Request, who: AdminUser,
                service_name: Annotated[str | None, Query(alias="service", max_length=40)] = None,
                action: Annotated[str | None, Query(max_length=80)] = None,
                action_prefix: Annotated[str | None, Query(max_length=80)] = None,
                actor_id: uuid.UUID | None = None,
                target_type: Annotated[str | None, Query(max_length=40)] = None,
                target_id: Annotated[str | None, Query(max_length=300)] = None,
                since: datetime | None = None, until: datetime | None = None,
                cursor: Cursor = None, limit: Limit = 50) -> dict[str, Any]:
    await _admin(request, who)
    filters = {"service": service_name, "action": action, "action_prefix": action_prefix, "actor_id": actor_id,
               "target_type": target_type, "target_id": target_id}
    async with _st(request).sessions() as s:
        return await moderation.read_audit(s, filters=filters, since=since, until=until, cursor=cursor, limit=limit)


# -- invites -------------------------------------------------------------------------------------

def _invite_read(i: Invite) -> dict[str, Any]:
    state = "revoked" if i.revoked_at else "used_up" if i.uses >= i.max_uses else \
        "expired" if i.expires_at <= now() else "open"
    return {"id": str(i.id), "role": i.role, "email": i.email, "created_by": str(i.created_by),
            "created_at": i.created_at.isoformat(), "expires_at": i.expires_at.isoformat(),
            "max_uses": i.max_uses, "uses": i.uses, "state": state,
            "used_at": i.used_at.isoformat() if i.used_at else None,
            "revoked_at": i.revoked_at.isoformat() if i.revoked_at else None}


@admin_router.get("/admin/invites", summary="Every invite, newest first (admins)")
async def list_invites(request: Request, who: AdminUser, cursor: Cursor = None, limit: Limit = 50) -> dict[str, Any]:
    await _admin(request, who)
    query = select(Invite)
    if cursor:
        at, iid = moderation.decode_cursor(cursor, 2)
        try:
            at_dt, iid_v = datetime.fromisoformat(at), uuid.UUID(iid)
        except ValueError:
            raise BadRequest("cursor: not a cursor this server issued") from None
        query = query.where((Invite.created_at < at_dt) | ((Invite.created_at == at_dt) & (Invite.id > iid_v)))
    async with _st(request).sessions() as s:
        rows = (await s.execute(query.order_by(Invite.created_at.desc(), Invite.id).limit(limit + 1))).scalars().all()
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [_invite_read(i) for i in rows],
            "next_cursor": moderation.encode_cursor(rows[-1].created_at.isoformat(), rows[-1].id) if more else None}


@admin_router.delete("/admin/invites/{invite_id}", status_code=204, summary="Revoke an invite (admins)")
async def revoke_invite(invite_id: uuid.UUID, request: Request, who: AdminUser) -> Response:
    async with _st(request).sessions() as s, s.begin():
        actor = await service.require_admin(s, who.user_id)
        invite = (await s.execute(select(Invite).where(Invite.id == invite_id).with_for_update())).scalar_one_or_none()
        if invite is None:
            raise NotFound("no such invite")
        if invite.revoked_at is None:
            invite.revoked_at = now()
            await service.record(s, actor, "invite.revoke", "invite", str(invite.id),
                                 before={"uses": invite.uses, "max_uses": invite.max_uses}, after={"revoked": True})
    return Response(status_code=204)
