"""Use cases of the goods service: products' status and merchant, plans, entitlements (each change
emitted to the ratelimit service), usage per day, announcements. Every admin or merchant action is
emitted as ``admin.action_recorded`` in the same transaction as the change."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.common.errors import Conflict, Forbidden, NotFound, Unprocessable
from wemcp.common.events.admin import AdminActionRecorded
from wemcp.common.events.goods import AnnouncementChanged, EntitlementChanged
from wemcp.common.identity import Identity
from wemcp.common.outbox import add_event
from wemcp.goods import repository
from wemcp.goods.models import Announcement, Entitlement, Plan, Product, bus_tables

FREE_CODE = "free"


# ---- products -----------------------------------------------------------------------------------


async def product_of_subject(session: AsyncSession, kind: str, ref: uuid.UUID, settings: Any) -> Product:
    """The product of a server or agent (what an event names), created (pending, with its free plan) on
    first sight; locked for this transaction so concurrent handlers of one subject apply one after the
    other. An agent's slug is its id; a server's comes with its submission or deployment."""
    p = await repository.ensure_product(session, kind, ref, str(ref) if kind == "agent" else "")
    await ensure_free_plan(session, p, settings)
    return p


async def ensure_free_plan(session: AsyncSession, p: Product, settings: Any) -> None:
    calls = settings.free_server_calls_per_day if p.kind == "server" else settings.free_agent_calls_per_day
    await repository.add_free_plan(session, p.id, FREE_CODE, calls)


async def settle(session: AsyncSession, p: Product) -> None:
    """Derives the merchant and the status from the product's facts."""
    if not p.merchant_assigned:
        role = None
        if p.owner_id is not None:
            role = await repository.role_of(session, p.owner_id)
        p.merchant_id = p.owner_id if role == "merchant" else None
    if p.deployed and not p.disabled and not p.merchant_delisted:
        if p.status != "listed":
            p.listed_at = p.listed_at or datetime.now(UTC)
        p.status = "listed"
    elif p.listed_at is not None:
        p.status = "delisted"
    else:
        p.status = "pending"
    await session.flush()


async def record(
    session: AsyncSession,
    who: Identity | None,
    action: str,
    target_type: str,
    target_id: Any,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str | None = None,
) -> None:
    await add_event(
        session,
        bus_tables,
        AdminActionRecorded(
            service="goods",
            action=action,
            actor_id=who.user_id if who else None,
            actor_role=who.role if who else None,
            target_type=target_type,
            target_id=str(target_id),
            before=before,
            after=after,
            reason=reason,
        ),
    )


async def apply_role(session: AsyncSession, user_id: uuid.UUID, role: str, at: datetime) -> None:
    """A user's role as of ``at`` (an older one than stored changes nothing); the owner's products
    follow it, unless an admin assigned their merchant."""
    await repository.save_role(session, user_id, role, at)
    for p in await repository.owned_products_locked(session, user_id):
        await settle(session, p)


def plan_view(plan: Plan) -> dict[str, Any]:
    return {
        "id": str(plan.id),
        "code": plan.code,
        "name": plan.name,
        "calls_per_day": plan.calls_per_day,
        "price_cents": plan.price_cents,
        "currency": plan.currency,
        "period": plan.period,
        "is_free": plan.is_free,
        "active": plan.active,
    }


def product_view(p: Product, plans: list[Plan], *, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(p.id),
        "kind": p.kind,
        "slug": p.slug,
        "name": p.name,
        "title": p.title,
        "description": p.description,
        "seller": "merchant" if p.merchant_id else "platform",
        "status": p.status,
        "listed_at": p.listed_at.isoformat() if p.listed_at else None,
        "plans": [plan_view(x) for x in plans],
    }
    if full:
        out.update(
            subject_id=str(p.subject_ref),
            owner_id=str(p.owner_id) if p.owner_id else None,
            merchant_id=str(p.merchant_id) if p.merchant_id else None,
            merchant_assigned=p.merchant_assigned,
            deployed=p.deployed,
            disabled=p.disabled,
            merchant_delisted=p.merchant_delisted,
            copy_edited=p.copy_edited,
            refreshed_at=p.refreshed_at.isoformat() if p.refreshed_at else None,
            created_at=p.created_at.isoformat(),
            updated_at=p.updated_at.isoformat(),
        )
    return out


async def product_views(
    session: AsyncSession, rows: list[Product], *, full: bool, active_only: bool
) -> list[dict[str, Any]]:
    plans = await repository.plans_of(session, [p.id for p in rows], active_only)
    return [product_view(p, plans[p.id], full=full) for p in rows]


async def products_page(
    session: AsyncSession,
    *,
    page: int,
    page_size: int,
    full: bool,
    query: str | None = None,
    kind: str | None = None,
    status: str | None = "listed",
    merchant_id: uuid.UUID | None = None,
    seller: str | None = None,
) -> dict[str, Any]:
    """A page of products (listed ones unless ``status`` says otherwise), newest listed first: the
    public view with active plans, or (``full``) the whole view with every plan."""
    rows, total = await repository.products_page(
        session,
        query=query,
        kind=kind,
        status=status,
        merchant_id=merchant_id,
        seller=seller,
        offset=(page - 1) * page_size,
        limit=page_size,
    )
    items = await product_views(session, rows, full=full, active_only=not full)
    return {"items": items, "total": total, "page": page, "page_size": page_size}


async def listed_product(session: AsyncSession, product_id: uuid.UUID) -> dict[str, Any]:
    """A listed product as anyone sees it (404 for any other)."""
    p = await repository.product(session, product_id)
    if p is None or p.status != "listed":
        raise NotFound(f"no product {product_id}")
    return (await product_views(session, [p], full=False, active_only=True))[0]


async def product_detail(session: AsyncSession, product_id: uuid.UUID) -> dict[str, Any]:
    """A product of any status, the whole view with every plan (404 when there is none)."""
    p = await repository.product(session, product_id)
    if p is None:
        raise NotFound(f"no product {product_id}")
    return await detail_view(session, p)


async def product_detail_by_subject(session: AsyncSession, kind: str, subject: str) -> dict[str, Any]:
    """The (newest) product of a server slug or agent id, the whole view."""
    p = await repository.product_by_subject(session, kind, subject)
    if p is None:
        raise NotFound(f"no product for {kind} {subject!r}")
    return await detail_view(session, p)


async def detail_view(session: AsyncSession, p: Product) -> dict[str, Any]:
    return (await product_views(session, [p], full=True, active_only=False))[0]


async def lock_product(session: AsyncSession, product_id: uuid.UUID, merchant: uuid.UUID | None) -> Product:
    """The product for a change, locked; with ``merchant`` set, only that merchant's (404 otherwise:
    another merchant's product is not even confirmed to exist)."""
    p = await repository.product_locked(session, product_id, merchant)
    if p is None:
        raise NotFound(f"no product {product_id}")
    return p


async def edit_copy(
    session: AsyncSession, p: Product, who: Identity, title: str | None, description: str | None
) -> None:
    before = {"title": p.title, "description": p.description}
    if title is not None:
        p.title = title
    if description is not None:
        p.description = description
    p.copy_edited = True
    await session.flush()
    await record(
        session, who, "product.edit", "product", p.id, before, {"title": p.title, "description": p.description}
    )


async def set_listed(session: AsyncSession, p: Product, who: Identity, listed: bool, reason: str | None) -> None:
    before = {"status": p.status}
    if listed and not p.deployed:
        raise Conflict("the product's server or agent is not published; it cannot be listed yet")
    p.merchant_delisted = not listed
    await settle(session, p)
    await record(
        session,
        who,
        "product.list" if listed else "product.delist",
        "product",
        p.id,
        before,
        {"status": p.status},
        reason,
    )


async def assign_merchant(
    session: AsyncSession, p: Product, who: Identity, merchant_id: uuid.UUID | None, by_owner: bool
) -> None:
    before = {"merchant_id": str(p.merchant_id) if p.merchant_id else None, "merchant_assigned": p.merchant_assigned}
    if by_owner:
        p.merchant_assigned = False
    else:
        if merchant_id is not None:
            role = await repository.role_of(session, merchant_id)
            if role != "merchant":
                raise Unprocessable("that user does not have the merchant role")
        p.merchant_assigned = True
        p.merchant_id = merchant_id
    await settle(session, p)
    await record(
        session,
        who,
        "product.assign_merchant",
        "product",
        p.id,
        before,
        {"merchant_id": str(p.merchant_id) if p.merchant_id else None, "merchant_assigned": p.merchant_assigned},
    )


# ---- plans --------------------------------------------------------------------------------------


async def get_plan(session: AsyncSession, p: Product, plan_id: uuid.UUID) -> Plan:
    plan = await repository.plan_locked(session, p.id, plan_id)
    if plan is None:
        raise NotFound(f"no plan {plan_id} on this product")
    return plan


async def create_plan(session: AsyncSession, p: Product, who: Identity, body: dict[str, Any]) -> Plan:
    if body["code"] == FREE_CODE:
        raise Conflict("the free plan exists on every product; edit it instead")
    if await repository.plan_code_taken(session, p.id, body["code"]):
        raise Conflict(f"the product already has a plan {body['code']!r}")
    plan = Plan(id=uuid.uuid4(), product_id=p.id, created_by=who.user_id, is_free=False, active=True, **body)
    session.add(plan)
    await session.flush()
    await record(session, who, "plan.create", "plan", plan.id, None, plan_view(plan))
    return plan


async def update_plan(
    session: AsyncSession, p: Product, plan: Plan, who: Identity, changes: dict[str, Any]
) -> list[Entitlement]:
    """Changes a plan; the entitlements to it carry its new daily limit (each emitted again)."""
    if plan.is_free and "price_cents" in changes and changes["price_cents"]:
        raise Unprocessable("the free plan has no price")
    before = plan_view(plan)
    for k, v in changes.items():
        setattr(plan, k, v)
    await session.flush()
    await record(session, who, "plan.update", "plan", plan.id, before, plan_view(plan))
    holders = await repository.holders_locked(session, plan.id)
    for ent in holders:
        ent.version += 1
        if not plan.active:
            ent.active = False
        await emit_entitlement(session, p, ent, plan, who)
    return holders


async def change_plan(
    session: AsyncSession, p: Product, plan_id: uuid.UUID, who: Identity, changes: dict[str, Any]
) -> Plan:
    """``update_plan`` on one of the product's plans; the free plan is never withdrawn."""
    plan = await get_plan(session, p, plan_id)
    if plan.is_free and changes.get("active") is False:
        raise Forbidden("the free plan cannot be withdrawn")
    await update_plan(session, p, plan, who, changes)
    return plan


async def plan_list(session: AsyncSession, p: Product) -> dict[str, Any]:
    """Every plan of the product, withdrawn ones too."""
    plans = (await repository.plans_of(session, [p.id], False))[p.id]
    return {"items": [plan_view(x) for x in plans]}


# ---- entitlements -------------------------------------------------------------------------------


def entitlement_view(ent: Entitlement, plan: Plan | None) -> dict[str, Any]:
    return {
        "id": str(ent.id),
        "user_id": str(ent.user_id),
        "product_id": str(ent.product_id),
        "plan": plan_view(plan) if plan else None,
        "active": ent.active,
        "expires_at": ent.expires_at.isoformat() if ent.expires_at else None,
        "version": ent.version,
        "note": ent.note,
        "granted_by": str(ent.granted_by) if ent.granted_by else None,
        "updated_at": ent.updated_at.isoformat() if ent.updated_at else None,
    }


async def emit_entitlement(
    session: AsyncSession, p: Product, ent: Entitlement, plan: Plan | None, who: Identity | None
) -> None:
    await session.flush()
    await add_event(
        session,
        bus_tables,
        EntitlementChanged(
            entitlement_id=ent.id,
            user_id=ent.user_id,
            product_id=p.id,
            subject_kind=p.kind,
            subject_id=p.slug,
            plan_id=plan.id if plan else None,
            plan_code=plan.code if plan else "",
            per_user_daily=plan.calls_per_day if plan else None,
            expires_at=ent.expires_at,
            active=ent.active and plan is not None,
            version=ent.version,
            actor_id=who.user_id if who else None,
        ),
    )


async def grant(
    session: AsyncSession,
    p: Product,
    who: Identity,
    user_id: uuid.UUID,
    plan_id: uuid.UUID,
    expires_at: datetime | None,
    note: str,
) -> tuple[Entitlement, Plan]:
    if not p.slug:
        raise Conflict("the product has no published server or agent yet")
    plan = await get_plan(session, p, plan_id)
    if not plan.active:
        raise Conflict("that plan is withdrawn")
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise Unprocessable("expires_at is in the past")
    ent = await repository.entitlement(session, user_id, p.id, lock=True)
    before = None
    if ent is None:
        ent = Entitlement(user_id=user_id, product_id=p.id, id=uuid.uuid4(), version=1)
        session.add(ent)
    else:
        before = {
            "plan_id": str(ent.plan_id) if ent.plan_id else None,
            "active": ent.active,
            "expires_at": ent.expires_at.isoformat() if ent.expires_at else None,
        }
        ent.version += 1
    ent.plan_id, ent.active, ent.expires_at, ent.note, ent.granted_by = plan.id, True, expires_at, note, who.user_id
    await emit_entitlement(session, p, ent, plan, who)
    after = {
        "product_id": str(p.id),
        "plan_id": str(plan.id),
        "plan_code": plan.code,
        "calls_per_day": plan.calls_per_day,
        "expires_at": expires_at.isoformat() if expires_at else None,
    }
    await record(session, who, "entitlement.grant", "user", user_id, before, after)
    await session.flush()
    await session.refresh(ent)  # as stored: its updated_at
    return ent, plan


async def revoke(session: AsyncSession, p: Product, who: Identity, user_id: uuid.UUID, reason: str | None) -> None:
    ent = await repository.entitlement(session, user_id, p.id, lock=True)
    if ent is None or not ent.active:
        raise NotFound(f"user {user_id} holds no entitlement to this product")
    ent.active = False
    ent.version += 1
    plan = await repository.plan(session, ent.plan_id) if ent.plan_id else None
    await emit_entitlement(session, p, ent, plan, who)
    before = {"product_id": str(p.id), "plan_id": str(ent.plan_id) if ent.plan_id else None}
    await record(session, who, "entitlement.revoke", "user", user_id, before, None, reason)


async def entitlement_for(
    session: AsyncSession, user_id: uuid.UUID, kind: str, subject: str, settings: Any
) -> dict[str, Any]:
    """What plan a user has for a server or agent (the internal query): their active, unexpired
    entitlement, else the free plan."""
    p = await repository.product_by_subject(session, kind, subject)
    now = datetime.now(UTC)
    free_calls = settings.free_server_calls_per_day if kind == "server" else settings.free_agent_calls_per_day
    out: dict[str, Any] = {
        "user_id": str(user_id),
        "kind": kind,
        "subject_id": subject,
        "product_id": str(p.id) if p else None,
        "plan": None,
        "entitled": False,
        "calls_per_day": free_calls,
        "expires_at": None,
    }
    if p is None:
        return out
    plans = {x.id: x for x in (await repository.plans_of(session, [p.id], False))[p.id]}
    free = next((x for x in plans.values() if x.is_free), None)
    if free is not None:
        out.update(plan=plan_view(free), calls_per_day=free.calls_per_day)
    ent = await repository.entitlement(session, user_id, p.id)
    if ent is not None and ent.active and ent.plan_id in plans and (ent.expires_at is None or ent.expires_at > now):
        plan = plans[ent.plan_id]
        if plan.active:
            out.update(
                plan=plan_view(plan),
                entitled=True,
                calls_per_day=plan.calls_per_day,
                expires_at=ent.expires_at.isoformat() if ent.expires_at else None,
            )
    return out


async def entitlements_page(session: AsyncSession, p: Product, page: int, page_size: int) -> dict[str, Any]:
    """Who holds which plan of a product (active entitlements), most recently changed first."""
    rows, total = await repository.entitlements_page(session, p.id, (page - 1) * page_size, page_size)
    return {"items": [entitlement_view(e, pl) for e, pl in rows], "total": total, "page": page, "page_size": page_size}


# ---- usage --------------------------------------------------------------------------------------


def today(zone: str) -> date:
    """The local day in ``zone`` (usage is counted per local day in the quota's zone)."""
    return datetime.now(UTC).astimezone(ZoneInfo(zone)).date()


def window(since: date | None, until: date | None, today: date) -> tuple[date, date]:
    until = until or today
    since = since or until - timedelta(days=29)
    if since > until:
        raise Unprocessable("since must not be after until")
    if (until - since).days > 366:
        raise Unprocessable("ask for at most 366 days at a time")
    return since, until


async def usage(
    session: AsyncSession, products: list[Product], since: date, until: date, top: int = 20
) -> dict[str, Any]:
    """Calls, refusals, errors and distinct (pseudonymised) users per day for some products; the
    busiest callers of the window under their pseudonyms."""
    keys = [(p.kind, p.slug) for p in products if p.slug]
    if not keys:
        return {"since": since.isoformat(), "until": until.isoformat(), "days": [], "top_callers": []}
    rows = await repository.usage_per_day(session, keys, since, until)
    distinct = await repository.distinct_users_per_day(session, keys, since, until)
    callers = await repository.top_callers(session, keys, since, until, top)
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "days": [
            {
                "day": day.isoformat(),
                "calls": int(c),
                "refused": int(r),
                "errors": int(e),
                "metered": int(m),
                "distinct_users": int(distinct.get(day, 0)),
            }
            for day, c, r, e, m in rows
        ],
        "top_callers": [{"user": who, "calls": int(c), "refused": int(r)} for who, c, r in callers],
    }


async def product_usage(session: AsyncSession, p: Product, since: date, until: date, zone: str) -> dict[str, Any]:
    body = await usage(session, [p], since, until)
    return {"product_id": str(p.id), "kind": p.kind, "slug": p.slug, "zone": zone, **body}


async def merchant_usage(
    session: AsyncSession, merchant_id: uuid.UUID, since: date, until: date, zone: str
) -> dict[str, Any]:
    """``usage`` over every product of the merchant."""
    rows = await repository.merchant_products(session, merchant_id)
    body = await usage(session, rows, since, until)
    return {"products": len(rows), "zone": zone, **body}


async def add_usage(
    session: AsyncSession,
    daily: dict[tuple[date, str, str], list[int]],
    users: dict[tuple[date, str, str, str], list[int]],
) -> None:
    """Adds a batch's sums: ``daily`` (day, kind, slug) → [calls, refused, errors, metered], ``users``
    (day, kind, slug, pseudonym) → [calls, refused]; in key order, so concurrent batches lock the rows
    in one order."""
    for (day, kind, slug), (calls, refused, errors, metered) in sorted(daily.items()):
        await repository.add_daily_usage(session, day, kind, slug, calls, refused, errors, metered)
    for (day, kind, slug, who), (calls, refused) in sorted(users.items()):
        await repository.add_user_usage(session, day, kind, slug, who, calls, refused)


# ---- announcements ------------------------------------------------------------------------------


def announcement_view(a: Announcement, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    if a.deleted:
        state = "deleted"
    elif a.publish_at > now:
        state = "scheduled"
    elif a.expire_at is not None and a.expire_at <= now:
        state = "expired"
    else:
        state = "published"
    return {
        "id": str(a.id),
        "title": {"zh": a.title_zh, "en": a.title_en},
        "body": {"zh": a.body_zh, "en": a.body_en},
        "pinned": a.pinned,
        "publish_at": a.publish_at.isoformat(),
        "expire_at": a.expire_at.isoformat() if a.expire_at else None,
        "state": state,
        "version": a.version,
        "updated_at": a.updated_at.isoformat() if a.updated_at else None,
    }


def _check_announcement(a: Announcement) -> None:
    if not (a.title_zh or a.title_en):
        raise Unprocessable("an announcement needs a title in Chinese or English (title.zh or title.en)")
    if a.expire_at is not None and a.expire_at <= a.publish_at:
        raise Unprocessable("expire_at must be after publish_at")


async def emit_announcement(session: AsyncSession, a: Announcement, action: str, who: Identity) -> None:
    await session.flush()
    await add_event(
        session,
        bus_tables,
        AnnouncementChanged(
            announcement_id=a.id,
            action=action,
            version=a.version,
            title_zh=a.title_zh,
            title_en=a.title_en,
            body_zh=a.body_zh,
            body_en=a.body_en,
            pinned=a.pinned,
            publish_at=a.publish_at,
            expire_at=a.expire_at,
            actor_id=who.user_id,
        ),
    )


def _audit(a: Announcement) -> dict[str, Any]:
    v = announcement_view(a)
    return {k: v[k] for k in ("title", "body", "pinned", "publish_at", "expire_at")}


async def create_announcement(session: AsyncSession, who: Identity, fields: dict[str, Any]) -> Announcement:
    a = Announcement(
        id=uuid.uuid4(),
        version=1,
        created_by=who.user_id,
        updated_by=who.user_id,
        deleted=False,
        **{"pinned": False, **fields},
    )
    a.publish_at = a.publish_at or datetime.now(UTC)
    _check_announcement(a)
    session.add(a)
    await emit_announcement(session, a, "created", who)
    await session.refresh(a)
    await record(session, who, "announcement.create", "announcement", a.id, None, _audit(a))
    return a


async def announcements_page(session: AsyncSession, *, visible_only: bool, page: int, page_size: int) -> dict[str, Any]:
    """Visible announcements (published, not expired) pinned first; or every one not deleted."""
    rows, total = await repository.announcements_page(
        session, visible_only=visible_only, offset=(page - 1) * page_size, limit=page_size
    )
    return {"items": [announcement_view(a) for a in rows], "total": total, "page": page, "page_size": page_size}


async def visible_announcement(session: AsyncSession, ann_id: uuid.UUID) -> dict[str, Any]:
    a = await repository.visible_announcement(session, ann_id)
    if a is None:
        raise NotFound(f"no announcement {ann_id}")
    return announcement_view(a)


async def lock_announcement(session: AsyncSession, ann_id: uuid.UUID) -> Announcement:
    a = await repository.announcement_locked(session, ann_id)
    if a is None:
        raise NotFound(f"no announcement {ann_id}")
    return a


async def update_announcement(session: AsyncSession, a: Announcement, who: Identity, fields: dict[str, Any]) -> None:
    before = _audit(a)
    for k, v in fields.items():
        setattr(a, k, v)
    _check_announcement(a)
    a.version += 1
    a.updated_by = who.user_id
    await emit_announcement(session, a, "updated", who)
    await session.refresh(a)
    await record(session, who, "announcement.update", "announcement", a.id, before, _audit(a))


async def delete_announcement(session: AsyncSession, a: Announcement, who: Identity) -> None:
    before = _audit(a)
    a.deleted = True
    a.version += 1
    a.updated_by = who.user_id
    await emit_announcement(session, a, "deleted", who)
    await record(session, who, "announcement.delete", "announcement", a.id, before, None)
