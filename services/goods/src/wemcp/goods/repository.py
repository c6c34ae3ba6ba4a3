"""The goods service's SQL: one function per query (a page with its count is one), on the caller's
session and in the caller's transaction. Decisions and events stay in ``service.py``; what stays above
this module is the ORM's unit of work (changing attributes of loaded rows, ``session.add``,
``flush``, ``refresh``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.goods.models import Account, Announcement, Entitlement, Plan, Product, UsageDaily, UsageUser


async def _count(session: AsyncSession, table: Any, where: Sequence[Any]) -> int:
    return int((await session.execute(select(func.count()).select_from(table).where(*where))).scalar_one())


# ---- products -----------------------------------------------------------------------------------


async def ensure_product(session: AsyncSession, kind: str, ref: uuid.UUID, slug: str) -> Product:
    """The product of a server or agent, inserted (pending, with ``slug``) when there is none; locked
    for the caller's transaction."""
    await session.execute(
        pg_insert(Product)
        .values(id=uuid.uuid4(), kind=kind, subject_ref=ref, slug=slug)
        .on_conflict_do_nothing(constraint="uq_products_subject")
    )
    query = select(Product).where(Product.kind == kind, Product.subject_ref == ref).with_for_update()
    return (await session.execute(query)).scalar_one()


async def product(session: AsyncSession, product_id: uuid.UUID) -> Product | None:
    return await session.get(Product, product_id)


async def product_locked(session: AsyncSession, product_id: uuid.UUID, merchant_id: uuid.UUID | None) -> Product | None:
    """The product, locked; with ``merchant_id`` set, only when that merchant's."""
    query = select(Product).where(Product.id == product_id)
    if merchant_id is not None:
        query = query.where(Product.merchant_id == merchant_id)
    return (await session.execute(query.with_for_update())).scalar_one_or_none()


async def product_by_subject(session: AsyncSession, kind: str, slug: str) -> Product | None:
    """The newest product of a server slug or agent id."""
    query = (
        select(Product).where(Product.kind == kind, Product.slug == slug).order_by(Product.created_at.desc()).limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def merchant_products(session: AsyncSession, merchant_id: uuid.UUID) -> list[Product]:
    return list((await session.execute(select(Product).where(Product.merchant_id == merchant_id))).scalars().all())


async def owned_products_locked(session: AsyncSession, owner_id: uuid.UUID) -> list[Product]:
    """The owner's products whose merchant follows the owner's role (no admin assigned one), locked."""
    query = select(Product).where(Product.owner_id == owner_id, Product.merchant_assigned.is_(False)).with_for_update()
    return list((await session.execute(query)).scalars().all())


async def products_page(
    session: AsyncSession,
    *,
    query: str | None,
    kind: str | None,
    status: str | None,
    merchant_id: uuid.UUID | None,
    seller: str | None,
    offset: int,
    limit: int,
) -> tuple[list[Product], int]:
    """Products newest listed first, with how many match; ``query`` is a substring of the title,
    name, slug or description (``%`` and ``_`` in it are literal)."""
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
        where.append(
            or_(
                Product.title.ilike(like),
                Product.name.ilike(like),
                Product.slug.ilike(like),
                Product.description.ilike(like),
            )
        )
    total = await _count(session, Product, where)
    rows = (
        await session.execute(
            select(Product)
            .where(*where)
            .order_by(Product.listed_at.desc().nulls_last(), Product.id)
            .offset(offset)
            .limit(limit)
        )
    ).scalars()
    return list(rows.all()), total


# ---- accounts -----------------------------------------------------------------------------------


async def role_of(session: AsyncSession, user_id: uuid.UUID) -> str | None:
    return (await session.execute(select(Account.role).where(Account.user_id == user_id))).scalar()


async def save_role(session: AsyncSession, user_id: uuid.UUID, role: str, at: datetime) -> None:
    """Stores a user's role unless a newer one (``role_at``) is stored already."""
    stmt = pg_insert(Account).values(user_id=user_id, role=role, role_at=at)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[Account.user_id],
            set_=dict(role=role, role_at=at),
            where=Account.role_at < stmt.excluded.role_at,
        )
    )


# ---- plans --------------------------------------------------------------------------------------


async def add_free_plan(session: AsyncSession, product_id: uuid.UUID, code: str, calls_per_day: int) -> None:
    """The product's free plan, unless it has one."""
    await session.execute(
        pg_insert(Plan)
        .values(
            id=uuid.uuid4(),
            product_id=product_id,
            code=code,
            name="Free",
            calls_per_day=calls_per_day,
            price_cents=0,
            is_free=True,
            active=True,
        )
        .on_conflict_do_nothing(constraint="uq_plans_code")
    )


async def plans_of(session: AsyncSession, ids: list[uuid.UUID], active_only: bool) -> dict[uuid.UUID, list[Plan]]:
    """The plans of each product, the free plan first, then by price and code."""
    out: dict[uuid.UUID, list[Plan]] = {i: [] for i in ids}
    if not ids:
        return out
    query = select(Plan).where(Plan.product_id.in_(ids))
    if active_only:
        query = query.where(Plan.active)
    for plan in (await session.execute(query.order_by(Plan.is_free.desc(), Plan.price_cents, Plan.code))).scalars():
        out[plan.product_id].append(plan)
    return out


async def plan(session: AsyncSession, plan_id: uuid.UUID) -> Plan | None:
    return await session.get(Plan, plan_id)


async def plan_locked(session: AsyncSession, product_id: uuid.UUID, plan_id: uuid.UUID) -> Plan | None:
    query = select(Plan).where(Plan.id == plan_id, Plan.product_id == product_id).with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def plan_code_taken(session: AsyncSession, product_id: uuid.UUID, code: str) -> bool:
    query = select(Plan.id).where(Plan.product_id == product_id, Plan.code == code)
    return (await session.execute(query)).first() is not None


# ---- entitlements -------------------------------------------------------------------------------


async def entitlement(
    session: AsyncSession, user_id: uuid.UUID, product_id: uuid.UUID, *, lock: bool = False
) -> Entitlement | None:
    query = select(Entitlement).where(Entitlement.user_id == user_id, Entitlement.product_id == product_id)
    return (await session.execute(query.with_for_update() if lock else query)).scalar_one_or_none()


async def holders_locked(session: AsyncSession, plan_id: uuid.UUID) -> list[Entitlement]:
    """The active entitlements to a plan, locked."""
    query = select(Entitlement).where(Entitlement.plan_id == plan_id, Entitlement.active).with_for_update()
    return list((await session.execute(query)).scalars().all())


async def entitlements_page(
    session: AsyncSession, product_id: uuid.UUID, offset: int, limit: int
) -> tuple[list[tuple[Entitlement, Plan | None]], int]:
    """A product's active entitlements with their plans, most recently changed first."""
    where = (Entitlement.product_id == product_id, Entitlement.active)
    total = await _count(session, Entitlement, where)
    rows = (
        await session.execute(
            select(Entitlement, Plan)
            .outerjoin(Plan, Plan.id == Entitlement.plan_id)
            .where(*where)
            .order_by(Entitlement.updated_at.desc(), Entitlement.user_id)
            .offset(offset)
            .limit(limit)
        )
    ).all()
    return [(e, p) for e, p in rows], total


# ---- usage --------------------------------------------------------------------------------------


async def add_daily_usage(
    session: AsyncSession, day: date, kind: str, slug: str, calls: int, refused: int, errors: int, metered: int
) -> None:
    """Adds to a product's counts of a day (sums commute: any order, each batch once)."""
    stmt = pg_insert(UsageDaily).values(
        day=day, kind=kind, slug=slug, calls=calls, refused=refused, errors=errors, metered=metered
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["day", "kind", "slug"],
            set_=dict(
                calls=UsageDaily.calls + stmt.excluded.calls,
                refused=UsageDaily.refused + stmt.excluded.refused,
                errors=UsageDaily.errors + stmt.excluded.errors,
                metered=UsageDaily.metered + stmt.excluded.metered,
            ),
        )
    )


async def add_user_usage(
    session: AsyncSession, day: date, kind: str, slug: str, pseudonym: str, calls: int, refused: int
) -> None:
    """Adds to a (pseudonymised) caller's counts of a day on a product."""
    stmt = pg_insert(UsageUser).values(day=day, kind=kind, slug=slug, pseudonym=pseudonym, calls=calls, refused=refused)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["day", "kind", "slug", "pseudonym"],
            set_=dict(calls=UsageUser.calls + stmt.excluded.calls, refused=UsageUser.refused + stmt.excluded.refused),
        )
    )


Subjects = Sequence[tuple[str, str]]  # (kind, slug) of the products asked about


def _window(table: type[UsageDaily] | type[UsageUser], subjects: Subjects, since: date, until: date) -> list[Any]:
    t = table
    return [or_(*[(t.kind == k) & (t.slug == s) for k, s in subjects]), t.day >= since, t.day <= until]


async def usage_per_day(
    session: AsyncSession, subjects: Subjects, since: date, until: date
) -> list[tuple[date, Any, Any, Any, Any]]:
    """(day, calls, refused, errors, metered) summed over the products, oldest day first (the sums are
    numerics)."""
    d = UsageDaily
    query = (
        select(d.day, func.sum(d.calls), func.sum(d.refused), func.sum(d.errors), func.sum(d.metered))
        .where(*_window(d, subjects, since, until))
        .group_by(d.day)
        .order_by(d.day)
    )
    return [(day, c, r, e, m) for day, c, r, e, m in (await session.execute(query)).all()]


async def distinct_users_per_day(
    session: AsyncSession, subjects: Subjects, since: date, until: date
) -> dict[date, Any]:
    u = UsageUser
    query = (
        select(u.day, func.count(func.distinct(u.pseudonym))).where(*_window(u, subjects, since, until)).group_by(u.day)
    )
    return {day: n for day, n in (await session.execute(query)).all()}


async def top_callers(
    session: AsyncSession, subjects: Subjects, since: date, until: date, top: int
) -> list[tuple[str, Any, Any]]:
    """(pseudonym, calls, refused) of the busiest callers of the window (the sums are numerics)."""
    u = UsageUser
    query = (
        select(u.pseudonym, func.sum(u.calls).label("calls"), func.sum(u.refused))
        .where(*_window(u, subjects, since, until))
        .group_by(u.pseudonym)
        .order_by(func.sum(u.calls).desc(), u.pseudonym)
        .limit(top)
    )
    return [(who, c, r) for who, c, r in (await session.execute(query)).all()]


# ---- announcements ------------------------------------------------------------------------------


def _visible() -> list[Any]:
    """Published (``publish_at`` passed) and not expired, by the database's clock."""
    now = func.now()
    return [
        Announcement.deleted.is_(False),
        Announcement.publish_at <= now,
        or_(Announcement.expire_at.is_(None), Announcement.expire_at > now),
    ]


async def announcements_page(
    session: AsyncSession, *, visible_only: bool, offset: int, limit: int
) -> tuple[list[Announcement], int]:
    """Visible announcements pinned first, then newest first; or (``visible_only`` false) every one not
    deleted, newest first."""
    if visible_only:
        where = _visible()
        order = [Announcement.pinned.desc(), Announcement.publish_at.desc(), Announcement.id]
    else:
        where = [Announcement.deleted.is_(False)]
        order = [Announcement.publish_at.desc(), Announcement.id]
    total = await _count(session, Announcement, where)
    rows = (
        await session.execute(select(Announcement).where(*where).order_by(*order).offset(offset).limit(limit))
    ).scalars()
    return list(rows.all()), total


async def visible_announcement(session: AsyncSession, ann_id: uuid.UUID) -> Announcement | None:
    query = select(Announcement).where(Announcement.id == ann_id, *_visible())
    return (await session.execute(query)).scalar_one_or_none()


async def announcement_locked(session: AsyncSession, ann_id: uuid.UUID) -> Announcement | None:
    """An announcement not deleted, locked."""
    query = select(Announcement).where(Announcement.id == ann_id, Announcement.deleted.is_(False)).with_for_update()
    return (await session.execute(query)).scalar_one_or_none()
