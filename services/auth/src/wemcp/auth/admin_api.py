"""Auth's part of the admin system (``/api/v1/admin/users``, ``/admin/audit``, ``/admin/invites``) and
the user's own account deletion (``DELETE /api/v1/me``). Every admin route needs the admin role as
the database knows it now (a token minted before a demotion does not do)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from wemcp.auth import moderation, service
from wemcp.auth.api import REFRESH_COOKIE
from wemcp.auth.deps import Session, State
from wemcp.auth.schemas import (
    AccountDeleted,
    AdminInviteList,
    AdminUserDetail,
    AdminUserList,
    AdminUserRead,
    AuditList,
    BanIn,
    ReasonIn,
    Role,
    RoleUpdate,
)
from wemcp.common.identity import AdminUser, CurrentUser

admin_router = APIRouter(prefix="/api/v1", tags=["admin"])

Cursor = Annotated[str | None, Query(max_length=500)]
Limit = Annotated[int, Query(ge=1, le=100)]


# -- users ---------------------------------------------------------------------------------------

@admin_router.get("/admin/users", summary="Search users (admins)", response_model=AdminUserList)
async def list_users(s: Session, who: AdminUser,
                     q: Annotated[str | None, Query(max_length=200)] = None, role: Role | None = None,
                     banned: bool | None = None, deleted: bool = False,
                     cursor: Cursor = None, limit: Limit = 50) -> dict[str, Any]:
    """By login, name, e-mail or a linked provider login (``q``), role, ban; newest first."""
    await service.require_admin(s, who.user_id)
    return await moderation.search_users(s, q=q, role=role, banned=banned, deleted=deleted, cursor=cursor,
                                         limit=limit)


@admin_router.get("/admin/users/{user_id}", summary="One user with their linked identities (admins)",
                  response_model=AdminUserDetail)
async def get_user(user_id: uuid.UUID, s: Session, who: AdminUser) -> dict[str, Any]:
    await service.require_admin(s, who.user_id)
    return await moderation.admin_user(s, user_id)


@admin_router.put("/admin/users/{user_id}/role", summary="Change a user's role (admins; below their own)",
                  response_model=AdminUserRead)
async def put_role(user_id: uuid.UUID, body: RoleUpdate, s: Session, who: AdminUser) -> dict[str, Any]:
    async with s.begin():
        user = await service.set_role(s, who.user_id, user_id, body.role, body.reason)
        return moderation.admin_user_read(user)


@admin_router.post("/admin/users/{user_id}/ban", summary="Ban a user: keys and sessions stop working (admins)",
                   response_model=AdminUserRead)
async def ban_user(user_id: uuid.UUID, body: BanIn, st: State, s: Session, who: AdminUser) -> dict[str, Any]:
    async with s.begin():
        return moderation.admin_user_read(await moderation.ban(s, st.settings, who.user_id, user_id, body.reason))


@admin_router.post("/admin/users/{user_id}/unban", summary="Lift a ban (admins)", response_model=AdminUserRead)
async def unban_user(user_id: uuid.UUID, s: Session, who: AdminUser,
                     body: ReasonIn | None = None) -> dict[str, Any]:
    async with s.begin():
        user = await moderation.unban(s, who.user_id, user_id, body.reason if body else None)
        return moderation.admin_user_read(user)


@admin_router.delete("/admin/users/{user_id}", summary="Delete a user's account (admins)",
                     response_model=AccountDeleted)
async def delete_user(user_id: uuid.UUID, st: State, s: Session, who: AdminUser,
                      reason: Annotated[str | None, Query(max_length=2000)] = None) -> dict[str, Any]:
    async with s.begin():
        removed = await moderation.delete_account(s, st.settings, user_id, actor_id=who.user_id, reason=reason)
    return {"id": str(user_id), "deleted": True, "removed": removed}


@admin_router.delete("/me", summary="Delete my account (secrets, keys, sessions at once)")
async def delete_me(st: State, s: Session, who: CurrentUser) -> JSONResponse:
    async with s.begin():
        removed = await moderation.delete_account(s, st.settings, who.user_id)
    resp = JSONResponse({"id": str(who.user_id), "deleted": True, "removed": removed})
    resp.delete_cookie(REFRESH_COOKIE, path="/api/v1/auth")  # the browser's session is over too
    return resp


# -- the audit log -------------------------------------------------------------------------------

@admin_router.get("/admin/audit", summary="The audit log of admin actions, newest first (admins; read-only)",
                  response_model=AuditList)
async def audit(s: Session, who: AdminUser,
                service_name: Annotated[str | None, Query(alias="service", max_length=40)] = None,
                action: Annotated[str | None, Query(max_length=80)] = None,
                action_prefix: Annotated[str | None, Query(max_length=80)] = None,
                actor_id: uuid.UUID | None = None,
                target_type: Annotated[str | None, Query(max_length=40)] = None,
                target_id: Annotated[str | None, Query(max_length=300)] = None,
                since: datetime | None = None, until: datetime | None = None,
                cursor: Cursor = None, limit: Limit = 50) -> dict[str, Any]:
    await service.require_admin(s, who.user_id)
    filters = {"service": service_name, "action": action, "action_prefix": action_prefix, "actor_id": actor_id,
               "target_type": target_type, "target_id": target_id}
    return await moderation.read_audit(s, filters=filters, since=since, until=until, cursor=cursor, limit=limit)


# -- invites -------------------------------------------------------------------------------------

@admin_router.get("/admin/invites", summary="Every invite, newest first (admins)", response_model=AdminInviteList)
async def list_invites(s: Session, who: AdminUser, cursor: Cursor = None, limit: Limit = 50) -> dict[str, Any]:
    await service.require_admin(s, who.user_id)
    return await moderation.list_invites(s, cursor, limit)


@admin_router.delete("/admin/invites/{invite_id}", status_code=204, summary="Revoke an invite (admins)")
async def revoke_invite(invite_id: uuid.UUID, s: Session, who: AdminUser) -> Response:
    async with s.begin():
        await moderation.revoke_invite(s, who.user_id, invite_id)
    return Response(status_code=204)
