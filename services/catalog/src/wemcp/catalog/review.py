"""The review queue and the catalog's admin area (``/api/v1/admin/...``, admins only).

A submission by a publisher who is not trusted waits as ``pending_review``: nothing is deployed and
no ``server.submitted`` leaves the catalog until an admin approves it. Trusted are admins (by role),
users an admin marked as trusted publishers (``catalog.publishers``), and the crawler (no owner).
Review clears a *package* (the row): its owner's later versions deploy without review, while a
pending or rejected row's resubmission waits again. Every admin action here is staged as
``admin.action_recorded`` in the transaction of the change (auth keeps the audit log).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.catalog import service
from wemcp.catalog.deps import Sessions
from wemcp.catalog.models import STATUSES, Category, Publisher, Server, bus_tables
from wemcp.catalog.repository import db, servers
from wemcp.catalog.repository import review as repository
from wemcp.catalog.schemas import (
    AdminCategoryList,
    AdminServerPage,
    CategoryIn,
    CategoryOut,
    PublisherList,
    PublisherRead,
    ReviewDetail,
    ReviewQueue,
)
from wemcp.common.db import transaction
from wemcp.common.errors import BadRequest, Conflict, NotFound, Unprocessable
from wemcp.common.events.admin import AdminActionRecorded
from wemcp.common.events.servers import ServerRejected
from wemcp.common.identity import AdminUser, Identity
from wemcp.common.outbox import add_event

admin_router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


# ---- the audit trail ---------------------------------------------------------------------------

async def record(session: AsyncSession, who: Identity | None, action: str, target_type: str, target_id: str, *,
                 before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
                 reason: str | None = None) -> None:
    """Stage ``admin.action_recorded`` with the change (same transaction: recorded iff it happened)."""
    await add_event(session, bus_tables, AdminActionRecorded(
        service="catalog", action=action, actor_id=who.user_id if who else None,
        actor_role=who.role if who else None, target_type=target_type, target_id=target_id,
        before=before, after=after, reason=reason))


# ---- trust -------------------------------------------------------------------------------------

async def is_trusted(session: AsyncSession, owner: Identity | None) -> bool:
    if owner is None or owner.at_least("admin"):
        return True
    return await repository.is_trusted(session, owner.user_id)


def queue(row: Server) -> None:
    """Put ``row`` (new, pending or rejected) in the review queue."""
    if row.status == "disabled":
        row.status_before_disable = "pending_review"
    else:
        row.status, row.status_detail = "pending_review", None
    row.review_requested_at = db.now()
    row.review_reason = None


# ---- decisions ---------------------------------------------------------------------------------

async def _pending(session: AsyncSession, slug: str) -> Server:
    row = await service.get_server(session, slug, lock=True)
    if row.status != "pending_review":
        raise Conflict(f"{slug!r} is not waiting for review (status {row.status})", extra={"server_status": row.status})
    return row


async def approve(session: AsyncSession, slug: str, who: Identity, note: str | None) -> Server:
    row = await _pending(session, slug)
    row.status, row.status_detail = "submitted", None
    row.review_cleared, row.reviewed_by, row.reviewed_at, row.review_reason = True, who.user_id, db.now(), note
    row.updated_at = db.now()
    await session.flush()
    await session.refresh(row)  # the times the database set
    await service.emit_submitted(session, row, approved_by=who.user_id)
    await record(session, who, "review.approve", "server", row.slug, before={"status": "pending_review"},
                 after={"status": "submitted", "version": row.version, "revision": row.revision}, reason=note)
    return row


async def reject(session: AsyncSession, slug: str, who: Identity, reason: str) -> Server:
    row = await _pending(session, slug)
    row.status, row.status_detail = "rejected", reason
    row.reviewed_by, row.reviewed_at, row.review_reason = who.user_id, db.now(), reason
    row.updated_at = db.now()
    await session.flush()
    await session.refresh(row)  # the times the database set
    await add_event(session, bus_tables, ServerRejected(
        server_id=row.id, slug=row.slug, name=row.name, version=row.version, owner_id=row.owner_id,
        reason=reason, actor_id=who.user_id))
    await record(session, who, "review.reject", "server", row.slug, before={"status": "pending_review"},
                 after={"status": "rejected", "version": row.version}, reason=reason)
    return row


def review_detail(row: Server) -> dict[str, Any]:
    """What an admin decides on: the spec, the packages as resolved (exact versions), the inputs."""
    spec = service.as_spec(row.spec)
    shown = ("registryType", "identifier", "version", "runtimeHint", "transport")
    packages = [{k: v for k, v in p.to_wire().items() if k in shown and v is not None} for p in spec.packages]
    remotes = [{"type": r.type, "url": r.url} for r in spec.remotes]
    archive = {k: v for k, v in spec.archive.to_wire().items() if k != "environmentVariables"} or None \
        if spec.archive is not None else None
    return {
        "slug": row.slug, "name": row.name, "version": row.version, "title": row.title,
        "description": row.description, "owner_id": str(row.owner_id) if row.owner_id else None,
        "source_kind": row.source_kind, "status": row.status, "package_key": row.package_key,
        "requested_at": row.review_requested_at.isoformat() if row.review_requested_at else None,
        "reviewed_by": str(row.reviewed_by) if row.reviewed_by else None,
        "reviewed_at": row.reviewed_at.isoformat() if row.reviewed_at else None,
        "review_reason": row.review_reason,
        "packages": packages, "remotes": remotes, "archive": archive,
        "network": spec.network,
        "inputs": service.public_inputs(spec), "spec": service.spec_for_display(row.spec or {}),
    }


# ---- cursors -----------------------------------------------------------------------------------

def _encode(at: datetime | None, sid: Any) -> str:
    raw = json.dumps([at.isoformat() if at else None, str(sid)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, str]:
    try:
        at, sid = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(at), str(UUID(sid))
    except Exception:
        raise BadRequest("cursor: not a cursor this server issued") from None


def _row_summary(r: Server) -> dict[str, Any]:
    return {"slug": r.slug, "name": r.name, "version": r.version, "title": r.title, "status": r.status,
            "status_detail": r.status_detail, "owner_id": str(r.owner_id) if r.owner_id else None,
            "source_kind": r.source_kind, "updated_at": r.updated_at.isoformat(),
            "requested_at": r.review_requested_at.isoformat() if r.review_requested_at else None}


# ---- routes: the review queue ------------------------------------------------------------------

class ReviewDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    reason: Annotated[str, StringConstraints(max_length=2000)] | None = None


class RejectDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    reason: Annotated[str, StringConstraints(min_length=3, max_length=2000)]


Cursor = Annotated[str | None, Query(max_length=500)]
Limit = Annotated[int, Query(ge=1, le=100)]


@admin_router.get("/review", response_model=ReviewQueue,
                  summary="The review queue, oldest request first (admins)")
async def review_queue(sessions: Sessions, who: AdminUser, cursor: Cursor = None,
                       limit: Limit = 50) -> dict[str, Any]:
    after = _decode(cursor) if cursor else None
    async with sessions() as s:
        total, rows = await repository.review_page(s, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [_row_summary(r) for r in rows], "total": total,
            "next_cursor": _encode(rows[-1].review_requested_at, rows[-1].id) if more else None}


@admin_router.get("/review/{slug}", response_model=ReviewDetail,
                  summary="A submission as the reviewer sees it (admins)")
async def review_item(slug: str, sessions: Sessions, who: AdminUser) -> dict[str, Any]:
    async with sessions() as s:
        return review_detail(await service.get_server(s, slug))


@admin_router.post("/review/{slug}/approve", response_model=ReviewDetail,
                   summary="Approve a waiting submission: it deploys (admins)")
async def review_approve(slug: str, sessions: Sessions, who: AdminUser,
                         body: ReviewDecision | None = None) -> dict[str, Any]:
    async with transaction(sessions) as s:
        row = await approve(s, slug, who, body.reason if body else None)
        return review_detail(row) | {"status": "submitted"}


@admin_router.post("/review/{slug}/reject", response_model=ReviewDetail,
                   summary="Reject a waiting submission with a reason (admins)")
async def review_reject(slug: str, body: RejectDecision, sessions: Sessions, who: AdminUser) -> dict[str, Any]:
    async with transaction(sessions) as s:
        row = await reject(s, slug, who, body.reason)
        return review_detail(row) | {"status": "rejected"}


# ---- routes: servers by status -----------------------------------------------------------------

@admin_router.get("/servers", response_model=AdminServerPage,
                  summary="Servers by status, with the count of each status (admins)")
async def admin_servers(sessions: Sessions, who: AdminUser,
                        status: Annotated[str | None, Query(max_length=20)] = None,
                        q: Annotated[str | None, Query(max_length=200)] = None,
                        cursor: Cursor = None, limit: Limit = 50) -> dict[str, Any]:
    if status is not None and status not in STATUSES:
        raise Unprocessable(f"status: one of {', '.join(STATUSES)}", extra={"errors": [
            {"field": "status", "in": "query", "message": "unknown status", "type": "enum"}]})
    after = _decode(cursor) if cursor else None
    async with sessions() as s:
        counts, rows = await repository.servers_page(s, status, q, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"counts": {st: int(counts.get(st, 0)) for st in STATUSES}, "total": int(sum(counts.values())),
            "items": [_row_summary(r) for r in rows],
            "next_cursor": _encode(rows[-1].updated_at, rows[-1].id) if more else None}


# ---- routes: trusted publishers ------------------------------------------------------------------

class PublisherIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    trusted: bool
    note: Annotated[str, StringConstraints(max_length=500)] | None = None


def _publisher(p: Publisher) -> dict[str, Any]:
    return {"user_id": str(p.user_id), "trusted": p.trusted, "note": p.note,
            "set_by": str(p.set_by) if p.set_by else None, "updated_at": p.updated_at.isoformat()}


@admin_router.get("/publishers", response_model=PublisherList, summary="Users marked as trusted publishers (admins)")
async def list_publishers(sessions: Sessions, who: AdminUser,
                          trusted: bool | None = True, limit: Limit = 100) -> dict[str, Any]:
    async with sessions() as s:
        rows = await repository.publishers(s, trusted, limit)
    return {"items": [_publisher(p) for p in rows], "total": len(rows)}


@admin_router.put("/publishers/{user_id}", response_model=PublisherRead,
                  summary="Trust (or stop trusting) a publisher (admins)")
async def put_publisher(user_id: UUID, body: PublisherIn, sessions: Sessions, who: AdminUser) -> dict[str, Any]:
    async with transaction(sessions) as s:
        before = await repository.publisher_for_update(s, user_id)
        was = before.trusted if before else False
        await repository.put_publisher(s, user_id, body.trusted, body.note, who.user_id)
        await record(s, who, "publisher.trust" if body.trusted else "publisher.untrust", "user", str(user_id),
                     before={"trusted": was}, after={"trusted": body.trusted}, reason=body.note)
        row = await repository.stored_publisher(s, user_id)
        assert row is not None
        return _publisher(row)


# ---- routes: categories (the same tree as /api/v1/categories, managed here) ---------------------

@admin_router.get("/categories", response_model=AdminCategoryList, summary="The category tree with counts (admins)")
async def admin_categories(sessions: Sessions, who: AdminUser) -> dict[str, Any]:
    async with sessions() as s:
        used = await servers.servers_per_category(s)
        return {"items": await service.category_tree(s),
                "servers_per_category": {k: int(v) for k, v in used.items() if k is not None}}


@admin_router.put("/categories/{slug}", response_model=CategoryOut, summary="Create or change a category (admins)")
async def admin_put_category(slug: str, body: CategoryIn, sessions: Sessions, who: AdminUser) -> dict[str, Any]:
    return await put_category(slug, body, sessions, who)


@admin_router.delete("/categories/{slug}", status_code=204, summary="Delete an unused category (admins)")
async def admin_delete_category(slug: str, sessions: Sessions, who: AdminUser) -> Response:
    return await delete_category(slug, sessions, who)


async def put_category(slug: str, body: CategoryIn, sessions: async_sessionmaker[AsyncSession],
                       who: Identity) -> dict[str, Any]:
    if body.slug != slug:
        raise Unprocessable("slug: the body's slug must match the path")
    async with transaction(sessions) as s:
        old = await s.get(Category, slug)
        before = {"name": old.name, "parent": old.parent_slug, "position": old.position} if old else None
        cat = await service.put_category(s, slug, body.name, body.parent, body.position)
        after = {"name": cat.name, "parent": cat.parent_slug, "position": cat.position}
        if before != after:
            await record(s, who, "category.put", "category", slug, before=before, after=after)
    return {"slug": cat.slug, "name": cat.name, "parent": cat.parent_slug, "position": cat.position}


async def delete_category(slug: str, sessions: async_sessionmaker[AsyncSession], who: Identity) -> Response:
    async with transaction(sessions) as s:
        old = await s.get(Category, slug)
        if old is None:
            raise NotFound(f"no category {slug!r}")
        before = {"name": old.name, "parent": old.parent_slug, "position": old.position}
        await service.delete_category(s, slug)
        await record(s, who, "category.delete", "category", slug, before=before)
    return Response(status_code=204)
