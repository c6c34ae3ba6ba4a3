"""Use cases of the goods service: products' status and merchant, plans, entitlements (each change
emitted to the ratelimit service), usage per day, announcements. Every admin or merchant action is
emitted as ``admin.action_recorded`` in the same transaction as the change."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.common.errors import Conflict, NotFound, Unprocessable
from wemcp.common.events.admin import AdminActionRecorded
from wemcp.common.events.goods import AnnouncementChanged, EntitlementChanged
from wemcp.common.identity import Identity
from wemcp.common.outbox import add_event
from wemcp.goods.models import Account, Announcement, Entitlement, Plan, Product, UsageDaily, UsageUser, bus_tables

FREE_CODE = "free"


# ---- products -----------------------------------------------------------------------------------

async def ensure_free_plan(session: AsyncSession, p: Product, settings: Any) -> None:
    calls = settings.free_server_calls_per_day if p.kind == "server" else settings.free_agent_calls_per_day
    await session.execute(pg_insert(Plan).values(
        id=uuid.uuid4(), product_id=p.id, code=FREE_CODE, name="Free", calls_per_day=calls, price_cents=0,
        is_free=True, active=True).on_conflict_do_nothing(constraint="uq_plans_code"))


async def settle(session: AsyncSession, p: Product) -> None:
    """Derives the merchant and the status from the product's facts."""
    if not p.merchant_assigned:
        role = None
        if p.owner_id is not None:
            role = (await session.execute(select(Account.role).where(Account.user_id == p.owner_id))).scalar()
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


async def record(session: AsyncSession, who: Identity | None, action: str, target_type: str, target_id: Any,
                 before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
                 reason: str | None = None) -> None:
    await add_event(session, bus_tables, AdminActionRecorded(
        service="goods", action=action, actor_id=who.user_id if who else None, actor_role=who.role if who else None,
        target_type=target_type, target_id=str(target_id), before=before, after=after, reason=reason))


async def plans_of(session: AsyncSession, ids: list[uuid.UUID], active_only: bool) -> dict[uuid.UUID, list[Plan]]:
    out: dict[uuid.UUID, list[Plan]] = {i: [] for i in ids}
    if not ids:
        return out
    q = select(Plan).where(Plan.product_id.in_(ids))
    if active_only:
        q = q.where(Plan.active)
    for plan in (await session.execute(q.order_by(Plan.is_free.desc(), Plan.price_cents, Plan.code))).scalars():
        out[plan.product_id].append(plan)
    return out


def plan_view(plan: Plan) -> dict[str, Any]:
    return {"id": str(plan.id), "code": plan.code, "name": plan.name, "calls_per_day": plan.calls_per_day,
            "price_cents": plan.price_cents, "currency": plan.currency, "period": plan.period,
            "is_free": plan.is_free, "active": plan.active}


def product_view(p: Product, plans: list[Plan], *, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(p.id), "kind": p.kind, "slug": p.slug, "name": p.name, "title": p.title,
        "description": p.description, "seller": "merchant" if p.merchant_id else "platform",
        "status": p.status, "listed_at": p.listed_at.isoformat() if p.listed_at else None,
        "plans": [plan_view(x) for x in plans]}
    if full:
        out.update(subject_id=str(p.subject_ref), owner_id=str(p.owner_id) if p.owner_id else None,
                   merchant_id=str(p.merchant_id) if p.merchant_id else None,
                   merchant_assigned=p.merchant_assigned, deployed=p.deployed, disabled=p.disabled,
                   merchant_delisted=p.merchant_delisted, copy_edited=p.copy_edited,
                   refreshed_at=p.refreshed_at.isoformat() if p.refreshed_at else None,
                   created_at=p.created_at.isoformat(), updated_at=p.updated_at.isoformat())
    return out


async def search_products(session: AsyncSession, *, query: str | None = None, kind: str | None = None,
                          status: str | None = "listed", merchant_id: uuid.UUID | None = None,
                          seller: str | None = None, offset: int = 0,
                          limit: int = 20) -> tuple[list[Product], int]:
    where: list[Any] = []
    if status:
        where.append(Product.status == status)
    if kind:
        where.append(Product.kind == kind)
    if merchant_id is not None:
        where.append(Product.merchant_id == merchant_id)
    if seller == "platform":
        where.append(Product.merchant_id.is_(None))
    elif seller == "merchant":
        where.append(Product.merchant_id.is_not(None))
    if query:
        like = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append(or_(Product.title.ilike(like), Product.name.ilike(like), Product.slug.ilike(like),
                         Product.description.ilike(like)))
    total = (await session.execute(select(func.count()).select_from(Product).where(*where))).scalar_one()
    rows = (await session.execute(select(Product).where(*where)
                                  .order_by(Product.listed_at.desc().nulls_last(), Product.id)
                                  .offset(offset).limit(limit))).scalars().all()
    return list(rows), int(total)


async def lock_product(session: AsyncSession, product_id: uuid.UUID, merchant: uuid.UUID | None) -> Product:
    """The product for a change, locked; with ``merchant`` set, only that merchant's (404 otherwise:
    another merchant's product is not even confirmed to exist)."""
    q = select(Product).where(Product.id == product_id)
    if merchant is not None:
        q = q.where(Product.merchant_id == merchant)
    p = (await session.execute(q.with_for_update())).scalar_one_or_none()
    if p is None:
        raise NotFound(f"no product {product_id}")
    return p


async def edit_copy(session: AsyncSession, p: Product, who: Identity, title: str | None,
                    description: str | None) -> None:
    before = {"title": p.title, "description": p.description}
    if title is not None:
        p.title = title
    if description is not None:
        p.description = description
    p.copy_edited = True
    await session.flush()
    await record(session, who, "product.edit", "product", p.id, before,
                 {"title": p.title, "description": p.description})


async def set_listed(session: AsyncSession, p: Product, who: Identity, listed: bool, reason: str | None) -> None:
    before = {"status": p.status}
    if listed and not p.deployed:
        raise Conflict("the product's server or agent is not published; it cannot be listed yet")
    p.merchant_delisted = not listed
    await settle(session, p)
    await record(session, who, "product.list" if listed else "product.delist", "product", p.id, before,
                 {"status": p.status}, reason)


async def assign_merchant(session: AsyncSession, p: Product, who: Identity, merchant_id: uuid.UUID | None,
                          by_owner: bool) -> None:
    before = {"merchant_id": str(p.merchant_id) if p.merchant_id else None, "merchant_assigned": p.merchant_assigned}
    if by_owner:
        p.merchant_assigned = False
    else:
        if merchant_id is not None:
            role = (await session.execute(select(Account.role).where(Account.user_id == merchant_id))).scalar()
            if role != "merchant":
                raise Unprocessable("that user does not have the merchant role")
        p.merchant_assigned = True
        p.merchant_id = merchant_id
    await settle(session, p)
    await record(session, who, "product.assign_merchant", "product", p.id, before,
                 {"merchant_id": str(p.merchant_id) if p.merchant_id else None,
                  "merchant_assigned": p.merchant_assigned})


# ---- plans --------------------------------------------------------------------------------------

async def get_plan(session: AsyncSession, p: Product, plan_id: uuid.UUID) -> Plan:
    plan = (await session.execute(select(Plan).where(Plan.id == plan_id, Plan.product_id == p.id)
                                  .with_for_update())).scalar_one_or_none()
    if plan is None:
        raise NotFound(f"no plan {plan_id} on this product")
    return plan


async def create_plan(session: AsyncSession, p: Product, who: Identity, body: dict[str, Any]) -> Plan:
    if body["code"] == FREE_CODE:
        raise Conflict("the free plan exists on every product; edit it instead")
    exists = (await session.execute(select(Plan.id).where(Plan.product_id == p.id, Plan.code == body["code"]))).first()
    if exists:
        raise Conflict(f"the product already has a plan {body['code']!r}")
    plan = Plan(id=uuid.uuid4(), product_id=p.id, created_by=who.user_id, is_free=False, active=True, **body)
    session.add(plan)
    await session.flush()
    await record(session, who, "plan.create", "plan", plan.id, None, plan_view(plan))
    return plan


async def update_plan(session: AsyncSession, p: Product, plan: Plan, who: Identity,
                      changes: dict[str, Any]) -> list[Entitlement]:
    """Changes a plan; the entitlements to it carry its new daily limit (each emitted again)."""
    if plan.is_free and "price_cents" in changes and changes["price_cents"]:
        raise Unprocessable("the free plan has no price")
    before = plan_view(plan)
    for k, v in changes.items():
        setattr(plan, k, v)
    await session.flush()
    await record(session, who, "plan.update", "plan", plan.id, before, plan_view(plan))
    holders = (await session.execute(select(Entitlement).where(Entitlement.plan_id == plan.id, Entitlement.active)
                                     .with_for_update())).scalars().all()
    for ent in holders:
        ent.version += 1
        if not plan.active:
            ent.active = False
        await emit_entitlement(session, p, ent, plan, who)
    return list(holders)


# ---- entitlements -------------------------------------------------------------------------------

def entitlement_view(ent: Entitlement, plan: Plan | None) -> dict[str, Any]:
    return {"id": str(ent.id), "user_id": str(ent.user_id), "product_id": str(ent.product_id),
            "plan": plan_view(plan) if plan else None, "active": ent.active,
            "expires_at": ent.expires_at.isoformat() if ent.expires_at else None, "version": ent.version,
            "note": ent.note, "granted_by": str(ent.granted_by) if ent.granted_by else None,
            "updated_at": ent.updated_at.isoformat() if ent.updated_at else None}


async def emit_entitlement(session: AsyncSession, p: Product, ent: Entitlement, plan: Plan | None,
                           who: Identity | None) -> None:
    await session.flush()
    await add_event(session, bus_tables, EntitlementChanged(
        entitlement_id=ent.id, user_id=ent.user_id, product_id=p.id, subject_kind=p.kind,
        subject_id=p.slug, plan_id=plan.id if plan else None, plan_code=plan.code if plan else "",
        per_user_daily=plan.calls_per_day if plan else None, expires_at=ent.expires_at,
        active=ent.active and plan is not None, version=ent.version, actor_id=who.user_id if who else None))


async def grant(session: AsyncSession, p: Product, who: Identity, user_id: uuid.UUID, plan_id: uuid.UUID,
                expires_at: datetime | None, note: str) -> tuple[Entitlement, Plan]:
    if not p.slug:
        raise Conflict("the product has no published server or agent yet")
    plan = await get_plan(session, p, plan_id)
    if not plan.active:
        raise Conflict("that plan is withdrawn")
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise Unprocessable("expires_at is in the past")
    ent = (await session.execute(select(Entitlement).where(Entitlement.user_id == user_id,
                                                           Entitlement.product_id == p.id)
                                 .with_for_update())).scalar_one_or_none()
    before = None
    if ent is None:
        ent = Entitlement(user_id=user_id, product_id=p.id, id=uuid.uuid4(), version=1)
        session.add(ent)
    else:
        before = {"plan_id": str(ent.plan_id) if ent.plan_id else None, "active": ent.active,
                  "expires_at": ent.expires_at.isoformat() if ent.expires_at else None}
        ent.version += 1
    ent.plan_id, ent.active, ent.expires_at, ent.note, ent.granted_by = plan.id, True, expires_at, note, who.user_id
    await emit_entitlement(session, p, ent, plan, who)
    await record(session, who, "entitlement.grant", "user", user_id, before,
                 {"product_id": str(p.id), "plan_id": str(plan.id), "plan_code": plan.code,
                  "calls_per_day": plan.calls_per_day,
                  "expires_at": expires_at.isoformat() if expires_at else None})
    return ent, plan


async def revoke(session: AsyncSession, p: Product, who: Identity, user_id: uuid.UUID, reason: str | None) -> None:
    ent = (await session.execute(select(Entitlement).where(Entitlement.user_id == user_id,
                                                           Entitlement.product_id == p.id)
                                 .with_for_update())).scalar_one_or_none()
    if ent is None or not ent.active:
        raise NotFound(f"user {user_id} holds no entitlement to this product")
    ent.active = False
    ent.version += 1
    plan = await session.get(Plan, ent.plan_id) if ent.plan_id else None
    await emit_entitlement(session, p, ent, plan, who)
    await record(session, who, "entitlement.revoke", "user", user_id,
                 {"product_id": str(p.id), "plan_id": str(ent.plan_id) if ent.plan_id else None}, None, reason)


async def entitlement_for(session: AsyncSession, user_id: uuid.UUID, kind: str, subject: str,
                          settings: Any) -> dict[str, Any]:
    """What plan a user has for a server or agent (the internal query): their active, unexpired
    entitlement, else the free plan."""
    p = (await session.execute(select(Product).where(Product.kind == kind, Product.slug == subject)
                               .order_by(Product.created_at.desc()).limit(1))).scalar_one_or_none()
    now = datetime.now(UTC)
    free_calls = settings.free_server_calls_per_day if kind == "server" else settings.free_agent_calls_per_day
    out: dict[str, Any] = {"user_id": str(user_id), "kind": kind, "subject_id": subject,
                           "product_id": str(p.id) if p else None, "plan": None, "entitled": False,
                           "calls_per_day": free_calls, "expires_at": None}
    if p is None:
        return out
    plans = {x.id: x for x in (await plans_of(session, [p.id], False))[p.id]}
    free = next((x for x in plans.values() if x.is_free), None)
    if free is not None:
        out.update(plan=plan_view(free), calls_per_day=free.calls_per_day)
    ent = (await session.execute(select(Entitlement).where(Entitlement.user_id == user_id,
                                                           Entitlement.product_id == p.id))).scalar_one_or_none()
    if ent is not None and ent.active and ent.plan_id in plans and (ent.expires_at is None or ent.expires_at > now):
        plan = plans[ent.plan_id]
        if plan.active:
            out.update(plan=plan_view(plan), entitled=True, calls_per_day=plan.calls_per_day,
                       expires_at=ent.expires_at.isoformat() if ent.expires_at else None)
    return out


# ---- usage --------------------------------------------------------------------------------------

def window(since: date | None, until: date | None, today: date) -> tuple[date, date]:
    until = until or today
    since = since or until - timedelta(days=29)
    if since > until:
        raise Unprocessable("since must not be after until")
    if (until - since).days > 366:
        raise Unprocessable("ask for at most 366 days at a time")
    return since, until


async def usage(session: AsyncSession, products: list[Product], since: date, until: date,
                top: int = 20) -> dict[str, Any]:
    """Calls, refusals, errors and distinct (pseudonymised) users per day for some products; the
    busiest callers of the window under their pseudonyms."""
    keys = [(p.kind, p.slug) for p in products if p.slug]
    if not keys:
        return {"since": since.isoformat(), "until": until.isoformat(), "days": [], "top_callers": []}
    subj_d = [(UsageDaily.kind == k) & (UsageDaily.slug == s) for k, s in keys]
    subj_u = [(UsageUser.kind == k) & (UsageUser.slug == s) for k, s in keys]
    d = UsageDaily
    rows = (await session.execute(
        select(d.day, func.sum(d.calls), func.sum(d.refused), func.sum(d.errors), func.sum(d.metered))
        .where(or_(*subj_d), d.day >= since, d.day <= until).group_by(d.day).order_by(d.day))).all()
    u = UsageUser
    distinct: dict[Any, Any] = dict((await session.execute(
        select(u.day, func.count(func.distinct(u.pseudonym))).where(or_(*subj_u), u.day >= since, u.day <= until)
        .group_by(u.day))).all())
    callers = (await session.execute(
        select(u.pseudonym, func.sum(u.calls).label("calls"), func.sum(u.refused))
        .where(or_(*subj_u), u.day >= since, u.day <= until).group_by(u.pseudonym)
        .order_by(func.sum(u.calls).desc(), u.pseudonym).limit(top))).all()
    return {"since": since.isoformat(), "until": until.isoformat(),
            "days": [{"day": day.isoformat(), "calls": int(c), "refused": int(r), "errors": int(e), "metered": int(m),
                      "distinct_users": int(distinct.get(day, 0))} for day, c, r, e, m in rows],
            "top_callers": [{"user": who, "calls": int(c), "refused": int(r)} for who, c, r in callers]}


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
    return {"id": str(a.id), "title": {"zh": a.title_zh, "en": a.title_en}, "body": {"zh": a.body_zh, "en": a.body_en},
            "pinned": a.pinned, "publish_at": a.publish_at.isoformat(),
            "expire_at": a.expire_at.isoformat() if a.expire_at else None, "state": state,
            "version": a.version, "updated_at": a.updated_at.isoformat() if a.updated_at else None}


def _check_announcement(a: Announcement) -> None:
    if not (a.title_zh or a.title_en):
        raise Unprocessable("an announcement needs a title in Chinese or English (title.zh or title.en)")
    if a.expire_at is not None and a.expire_at <= a.publish_at:
        raise Unprocessable("expire_at must be after publish_at")


async def emit_announcement(session: AsyncSession, a: Announcement, action: str, who: Identity) -> None:
    await session.flush()
    await add_event(session, bus_tables, AnnouncementChanged(
        announcement_id=a.id, action=action, version=a.version, title_zh=a.title_zh,
        title_en=a.title_en, body_zh=a.body_zh, body_en=a.body_en, pinned=a.pinned, publish_at=a.publish_at,
        expire_at=a.expire_at, actor_id=who.user_id))


def _audit(a: Announcement) -> dict[str, Any]:
    v = announcement_view(a)
    return {k: v[k] for k in ("title", "body", "pinned", "publish_at", "expire_at")}


async def create_announcement(session: AsyncSession, who: Identity, fields: dict[str, Any]) -> Announcement:
    a = Announcement(id=uuid.uuid4(), version=1, created_by=who.user_id, updated_by=who.user_id, deleted=False,
                     **{"pinned": False, **fields})
    a.publish_at = a.publish_at or datetime.now(UTC)
    _check_announcement(a)
    session.add(a)
    await emit_announcement(session, a, "created", who)
    await session.refresh(a)
    await record(session, who, "announcement.create", "announcement", a.id, None, _audit(a))
    return a


async def lock_announcement(session: AsyncSession, ann_id: uuid.UUID) -> Announcement:
    a = (await session.execute(select(Announcement).where(Announcement.id == ann_id, Announcement.deleted.is_(False))
                               .with_for_update())).scalar_one_or_none()
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


def visible_announcements() -> list[Any]:
    now = func.now()
    return [Announcement.deleted.is_(False), Announcement.publish_at <= now,
            or_(Announcement.expire_at.is_(None), Announcement.expire_at > now)]
