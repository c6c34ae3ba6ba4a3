"""HTTP API of the goods service (behind the gateway: /api/v1/goods, /merchant, /announcements,
/admin/goods, /admin/announcements; /internal/goods for other services only).

Who may call what:
- ``GET /api/v1/goods``, ``GET /api/v1/goods/{id}``, ``POST /api/v1/goods/search``,
  ``GET /api/v1/announcements[/{id}]``: anyone (listed products, visible announcements only).
- ``/api/v1/merchant/...``: the ``merchant`` role, on the products whose merchant they are; any
  other product is a 404 (not even its existence is confirmed).
- ``/api/v1/admin/goods/...``: admins, on every product.
- ``/api/v1/admin/announcements/...``: the superadmin only (an admin gets 403).
- ``/internal/goods/...``: the platform's services (a service credential without a user); the
  gateway never forwards ``/internal`` paths.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy import func, select

from wemcp.common.errors import Forbidden, NotFound
from wemcp.common.identity import AdminUser, Identity, SuperAdminUser, identity_of, require_role
from wemcp.common.pagination import Page
from wemcp.goods import service
from wemcp.goods.models import Announcement, Entitlement, Plan, Product
from wemcp.goods.schemas import (
    AnnouncementCreate,
    AnnouncementUpdate,
    CopyEdit,
    EntitlementGrant,
    GoodsSearch,
    ListingChange,
    MerchantAssign,
    PlanCreate,
    PlanUpdate,
)

router = APIRouter(prefix="/api/v1", tags=["goods"])
internal_router = APIRouter(prefix="/internal/goods", tags=["internal"], include_in_schema=False)

PageNo = Annotated[int, Query(ge=1, le=10_000)]
PageSize = Annotated[int, Query(ge=1, le=100)]
Kind = Annotated[str | None, Query(pattern="^(server|agent)$")]


def _rt(request: Request) -> Any:
    return request.app.state.runtime


def _sessions(request: Request) -> Any:
    return _rt(request).sessions


def _today(request: Request) -> date:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    return datetime.now(UTC).astimezone(ZoneInfo(_rt(request).settings.day_zone)).date()


async def _views(s: Any, rows: list[Product], *, full: bool, active_only: bool) -> list[dict[str, Any]]:
    plans = await service.plans_of(s, [p.id for p in rows], active_only)
    return [service.product_view(p, plans[p.id], full=full) for p in rows]


# ---- public catalogue ---------------------------------------------------------------------------

@router.get("/goods", summary="Listed products, newest first (anyone)")
async def list_goods(request: Request, page: PageNo = 1, page_size: PageSize = 20, kind: Kind = None) -> dict[str, Any]:
    async with _sessions(request)() as s:
        rows, total = await service.search_products(s, kind=kind, offset=(page - 1) * page_size, limit=page_size)
        items = await _views(s, rows, full=False, active_only=True)
    return {"items": items, "total": total, "page": page, "page_size": page_size}


@router.post("/goods/search", summary="Search listed products, pagination in the body (anyone)")
async def search_goods(request: Request, body: GoodsSearch) -> Page[dict[str, Any]]:
    async with _sessions(request)() as s:
        rows, total = await service.search_products(s, query=body.query, kind=body.kind, seller=body.seller,
                                                    offset=body.offset, limit=body.limit)
        items = await _views(s, rows, full=False, active_only=True)
    return Page.of(items, total, body)


@router.get("/goods/{product_id}", summary="One listed product and its plans (anyone)")
async def get_goods(request: Request, product_id: UUID) -> dict[str, Any]:
    async with _sessions(request)() as s:
        p = await s.get(Product, product_id)
        if p is None or p.status != "listed":
            raise NotFound(f"no product {product_id}")
        return (await _views(s, [p], full=False, active_only=True))[0]


# ---- per-product routes, for merchants (their own) and admins (all) -----------------------------

Pid = Annotated[UUID, Path(description="the product's id")]
Scope = Callable[[Identity], UUID | None]  # which merchant's products the caller may touch (None: all)


def _product_routes(r: APIRouter, prefix: str, who_dep: Any, scope: Scope, label: str) -> None:
    caller = Depends(who_dep)

    async def change(request: Request, pid: UUID, who: Identity,
                     fn: Callable[[Any, Product], Awaitable[Any]]) -> dict[str, Any]:
        async with _sessions(request)() as s, s.begin():
            p = await service.lock_product(s, pid, scope(who))
            await fn(s, p)
        async with _sessions(request)() as s:
            fresh = await s.get(Product, pid)
            assert fresh is not None
            return (await _views(s, [fresh], full=True, active_only=False))[0]

    @r.get(f"{prefix}/{{product_id}}", summary=f"One product with all its plans ({label})")
    async def get_one(request: Request, product_id: Pid, who: Identity = caller) -> dict[str, Any]:
        async with _sessions(request)() as s:
            p = await service.lock_product(s, product_id, scope(who))
            return (await _views(s, [p], full=True, active_only=False))[0]

    @r.patch(f"{prefix}/{{product_id}}", summary=f"Edit a product's copy: title, description ({label})")
    async def edit(request: Request, product_id: Pid, body: CopyEdit, who: Identity = caller) -> dict[str, Any]:
        return await change(request, product_id, who,
                            lambda s, p: service.edit_copy(s, p, who, body.title, body.description))

    @r.post(f"{prefix}/{{product_id}}/list", summary=f"List a delisted product again ({label})")
    async def list_it(request: Request, product_id: Pid, who: Identity = caller,
                      body: ListingChange | None = None) -> dict[str, Any]:
        return await change(request, product_id, who,
                            lambda s, p: service.set_listed(s, p, who, True, body.reason if body else None))

    @r.post(f"{prefix}/{{product_id}}/delist", summary=f"Take a product out of the catalogue ({label})")
    async def delist_it(request: Request, product_id: Pid, who: Identity = caller,
                        body: ListingChange | None = None) -> dict[str, Any]:
        return await change(request, product_id, who,
                            lambda s, p: service.set_listed(s, p, who, False, body.reason if body else None))

    @r.get(f"{prefix}/{{product_id}}/plans", summary=f"A product's plans, withdrawn ones too ({label})")
    async def plans(request: Request, product_id: Pid, who: Identity = caller) -> dict[str, Any]:
        async with _sessions(request)() as s:
            p = await service.lock_product(s, product_id, scope(who))
            got = (await service.plans_of(s, [p.id], False))[p.id]
        return {"items": [service.plan_view(x) for x in got]}

    @r.post(f"{prefix}/{{product_id}}/plans", status_code=201, summary=f"Define a raised plan ({label})")
    async def add_plan(request: Request, product_id: Pid, body: PlanCreate, who: Identity = caller) -> dict[str, Any]:
        async with _sessions(request)() as s, s.begin():
            p = await service.lock_product(s, product_id, scope(who))
            plan = await service.create_plan(s, p, who, body.model_dump())
            return service.plan_view(plan)

    @r.patch(f"{prefix}/{{product_id}}/plans/{{plan_id}}",
             summary=f"Change a plan (its holders' quotas follow) or withdraw it (active: false) ({label})")
    async def edit_plan(request: Request, product_id: Pid, plan_id: UUID, body: PlanUpdate,
                        who: Identity = caller) -> dict[str, Any]:
        changes = body.model_dump(exclude_unset=True)
        async with _sessions(request)() as s, s.begin():
            p = await service.lock_product(s, product_id, scope(who))
            plan = await service.get_plan(s, p, plan_id)
            if plan.is_free and changes.get("active") is False:
                raise Forbidden("the free plan cannot be withdrawn")
            await service.update_plan(s, p, plan, who, changes)
            return service.plan_view(plan)

    @r.get(f"{prefix}/{{product_id}}/entitlements", summary=f"Who holds which plan of a product ({label})")
    async def entitlements(request: Request, product_id: Pid, who: Identity = caller, page: PageNo = 1,
                           page_size: PageSize = 50) -> dict[str, Any]:
        async with _sessions(request)() as s:
            p = await service.lock_product(s, product_id, scope(who))
            where = (Entitlement.product_id == p.id, Entitlement.active)
            total = (await s.execute(select(func.count()).select_from(Entitlement).where(*where))).scalar_one()
            rows = (await s.execute(select(Entitlement, Plan).outerjoin(Plan, Plan.id == Entitlement.plan_id)
                                    .where(*where).order_by(Entitlement.updated_at.desc(), Entitlement.user_id)
                                    .offset((page - 1) * page_size).limit(page_size))).all()
        return {"items": [service.entitlement_view(e, pl) for e, pl in rows], "total": total, "page": page,
                "page_size": page_size}

    @r.put(f"{prefix}/{{product_id}}/entitlements/{{user_id}}",
           summary=f"Grant a user a plan of a product: their daily quota follows ({label})")
    async def put_entitlement(request: Request, product_id: Pid, user_id: UUID, body: EntitlementGrant,
                              who: Identity = caller) -> dict[str, Any]:
        async with _sessions(request)() as s, s.begin():
            p = await service.lock_product(s, product_id, scope(who))
            ent, plan = await service.grant(s, p, who, user_id, body.plan_id, body.expires_at, body.note)
            await s.flush()
            await s.refresh(ent)
            return service.entitlement_view(ent, plan)

    @r.delete(f"{prefix}/{{product_id}}/entitlements/{{user_id}}", status_code=204,
              summary=f"Revoke a user's plan: the free plan applies again ({label})")
    async def delete_entitlement(request: Request, product_id: Pid, user_id: UUID, who: Identity = caller) -> Response:
        async with _sessions(request)() as s, s.begin():
            p = await service.lock_product(s, product_id, scope(who))
            await service.revoke(s, p, who, user_id, None)
        return Response(status_code=204)

    @r.get(f"{prefix}/{{product_id}}/usage",
           summary=f"Calls, refusals and distinct pseudonymised users per day ({label})")
    async def product_usage(request: Request, product_id: Pid, who: Identity = caller, since: date | None = None,
                            until: date | None = None) -> dict[str, Any]:
        lo, hi = service.window(since, until, _today(request))
        async with _sessions(request)() as s:
            p = await service.lock_product(s, product_id, scope(who))
            body = await service.usage(s, [p], lo, hi)
        return {"product_id": str(p.id), "kind": p.kind, "slug": p.slug, "zone": _rt(request).settings.day_zone,
                **body}


MerchantDep = require_role("merchant")
_product_routes(router, "/merchant/products", MerchantDep, lambda who: who.user_id, "merchant: own products")
_product_routes(router, "/admin/goods", require_role("admin"), lambda who: None, "admin")


@router.get("/merchant/products", summary="My products (merchant)")
async def my_products(request: Request, who: Annotated[Identity, Depends(MerchantDep)], page: PageNo = 1,
                      page_size: PageSize = 20, kind: Kind = None,
                      status: Annotated[str | None, Query(pattern="^(pending|listed|delisted)$")] = None,
                      ) -> dict[str, Any]:
    async with _sessions(request)() as s:
        rows, total = await service.search_products(s, kind=kind, status=status, merchant_id=who.user_id,
                                                    offset=(page - 1) * page_size, limit=page_size)
        items = await _views(s, rows, full=True, active_only=False)
    return {"items": items, "total": total, "page": page, "page_size": page_size}


@router.get("/merchant/usage", summary="Calls, refusals and distinct users per day over all my products (merchant)")
async def my_usage(request: Request, who: Annotated[Identity, Depends(MerchantDep)], since: date | None = None,
                   until: date | None = None) -> dict[str, Any]:
    lo, hi = service.window(since, until, _today(request))
    async with _sessions(request)() as s:
        rows = (await s.execute(select(Product).where(Product.merchant_id == who.user_id))).scalars().all()
        body = await service.usage(s, list(rows), lo, hi)
    return {"products": len(rows), "zone": _rt(request).settings.day_zone, **body}


@router.get("/admin/goods", summary="Every product, any status (admin)")
async def all_products(request: Request, _: AdminUser, page: PageNo = 1, page_size: PageSize = 20,
                       kind: Kind = None,
                       status: Annotated[str | None, Query(pattern="^(pending|listed|delisted)$")] = None,
                       merchant_id: UUID | None = None) -> dict[str, Any]:
    async with _sessions(request)() as s:
        rows, total = await service.search_products(s, kind=kind, status=status, merchant_id=merchant_id,
                                                    offset=(page - 1) * page_size, limit=page_size)
        items = await _views(s, rows, full=True, active_only=False)
    return {"items": items, "total": total, "page": page, "page_size": page_size}


@router.put("/admin/goods/{product_id}/merchant", summary="Assign a product's merchant (admin)")
async def put_merchant(request: Request, product_id: UUID, body: MerchantAssign, who: AdminUser) -> dict[str, Any]:
    async with _sessions(request)() as s, s.begin():
        p = await service.lock_product(s, product_id, None)
        await service.assign_merchant(s, p, who, body.merchant_id, body.follow_owner)
    async with _sessions(request)() as s:
        fresh = await s.get(Product, product_id)
        assert fresh is not None
        return (await _views(s, [fresh], full=True, active_only=False))[0]


# ---- announcements ------------------------------------------------------------------------------

@router.get("/announcements", summary="Published, unexpired announcements: pinned first, newest first (anyone)")
async def announcements(request: Request, page: PageNo = 1, page_size: PageSize = 20) -> dict[str, Any]:
    where = service.visible_announcements()
    async with _sessions(request)() as s:
        total = (await s.execute(select(func.count()).select_from(Announcement).where(*where))).scalar_one()
        rows = (await s.execute(select(Announcement).where(*where)
                                .order_by(Announcement.pinned.desc(), Announcement.publish_at.desc(), Announcement.id)
                                .offset((page - 1) * page_size).limit(page_size))).scalars().all()
    return {"items": [service.announcement_view(a) for a in rows], "total": total, "page": page,
            "page_size": page_size}


@router.get("/announcements/{announcement_id}", summary="One published announcement (anyone)")
async def announcement(request: Request, announcement_id: UUID) -> dict[str, Any]:
    async with _sessions(request)() as s:
        a = (await s.execute(select(Announcement).where(Announcement.id == announcement_id,
                                                        *service.visible_announcements()))).scalar_one_or_none()
    if a is None:
        raise NotFound(f"no announcement {announcement_id}")
    return service.announcement_view(a)


@router.get("/admin/announcements", summary="Every announcement: scheduled, published, expired (superadmin)")
async def all_announcements(request: Request, _: SuperAdminUser, page: PageNo = 1,
                            page_size: PageSize = 20) -> dict[str, Any]:
    where = [Announcement.deleted.is_(False)]
    async with _sessions(request)() as s:
        total = (await s.execute(select(func.count()).select_from(Announcement).where(*where))).scalar_one()
        rows = (await s.execute(select(Announcement).where(*where)
                                .order_by(Announcement.publish_at.desc(), Announcement.id)
                                .offset((page - 1) * page_size).limit(page_size))).scalars().all()
    return {"items": [service.announcement_view(a) for a in rows], "total": total, "page": page,
            "page_size": page_size}


def _announcement_fields(body: AnnouncementCreate | AnnouncementUpdate) -> dict[str, Any]:
    data = body.model_dump(exclude_unset=True)
    out: dict[str, Any] = {}
    if body.title is not None:
        out.update(title_zh=body.title.zh, title_en=body.title.en)
    if body.body is not None:
        out.update(body_zh=body.body.zh, body_en=body.body.en)
    for k in ("pinned", "publish_at", "expire_at"):
        if k in data and data[k] is not None:
            out[k] = getattr(body, k)
    if isinstance(body, AnnouncementUpdate) and body.clear_expire_at:
        out["expire_at"] = None
    return out


@router.post("/admin/announcements", status_code=201,
             summary="Write an announcement; publish_at in the future schedules it (superadmin)")
async def create_announcement(request: Request, body: AnnouncementCreate, who: SuperAdminUser) -> dict[str, Any]:
    async with _sessions(request)() as s, s.begin():
        a = await service.create_announcement(s, who, _announcement_fields(body))
        return service.announcement_view(a)


@router.patch("/admin/announcements/{announcement_id}", summary="Edit or reschedule an announcement (superadmin)")
async def update_announcement(request: Request, announcement_id: UUID, body: AnnouncementUpdate,
                              who: SuperAdminUser) -> dict[str, Any]:
    async with _sessions(request)() as s, s.begin():
        a = await service.lock_announcement(s, announcement_id)
        await service.update_announcement(s, a, who, _announcement_fields(body))
        return service.announcement_view(a)


@router.delete("/admin/announcements/{announcement_id}", status_code=204,
               summary="Delete an announcement (superadmin)")
async def delete_announcement(request: Request, announcement_id: UUID, who: SuperAdminUser) -> Response:
    async with _sessions(request)() as s, s.begin():
        a = await service.lock_announcement(s, announcement_id)
        await service.delete_announcement(s, a, who)
    return Response(status_code=204)


# ---- internal queries (other services, with the platform's credential) -------------------------

def _platform(request: Request) -> None:
    """The trust middleware already refused /internal without a valid assertion; a user's assertion
    (what the gateway would send) is not the platform calling."""
    if identity_of(request) is not None:
        raise Forbidden("internal routes answer the platform's services, not users")


Platform = Annotated[None, Depends(_platform)]


@internal_router.get("/entitlements/{user_id}", summary="A user's plan for one server or agent")
async def internal_entitlement(request: Request, user_id: UUID, _: Platform,
                               kind: Annotated[str, Query(pattern="^(server|agent)$")],
                               subject: Annotated[str, Query(min_length=1, max_length=200)]) -> dict[str, Any]:
    async with _sessions(request)() as s:
        return await service.entitlement_for(s, user_id, kind, subject, _rt(request).settings)


@internal_router.get("/products/{product_id}", summary="One product, any status")
async def internal_product(request: Request, product_id: UUID, _: Platform) -> dict[str, Any]:
    async with _sessions(request)() as s:
        p = await s.get(Product, product_id)
        if p is None:
            raise NotFound(f"no product {product_id}")
        return (await _views(s, [p], full=True, active_only=False))[0]


@internal_router.get("/products", summary="The product of a server (slug) or agent (id)")
async def internal_product_by_subject(request: Request, _: Platform,
                                      kind: Annotated[str, Query(pattern="^(server|agent)$")],
                                      subject: Annotated[str, Query(min_length=1, max_length=200)]) -> dict[str, Any]:
    async with _sessions(request)() as s:
        p = (await s.execute(select(Product).where(Product.kind == kind, Product.slug == subject)
                             .order_by(Product.created_at.desc()).limit(1))).scalar_one_or_none()
        if p is None:
            raise NotFound(f"no product for {kind} {subject!r}")
        return (await _views(s, [p], full=True, active_only=False))[0]

