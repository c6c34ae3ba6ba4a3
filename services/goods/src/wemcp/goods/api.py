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

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import date
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.common.identity import AdminUser, Identity, PlatformCaller, SuperAdminUser, require_role
from wemcp.goods import service
from wemcp.goods.deps import GoodsSettings, Session, Sessions
from wemcp.goods.models import Product
from wemcp.goods.schemas import (
    AnnouncementCreate,
    AnnouncementList,
    AnnouncementRead,
    AnnouncementUpdate,
    CopyEdit,
    EntitlementFor,
    EntitlementGrant,
    EntitlementList,
    EntitlementRead,
    GoodsSearch,
    ListingChange,
    MerchantAssign,
    MerchantUsage,
    PlanCreate,
    PlanList,
    PlanRead,
    PlanUpdate,
    ProductDetail,
    ProductDetailList,
    ProductList,
    ProductRead,
    ProductUsage,
)

router = APIRouter(prefix="/api/v1", tags=["goods"])
internal_router = APIRouter(prefix="/internal/goods", tags=["internal"], include_in_schema=False)

PageNo = Annotated[int, Query(ge=1, le=10_000)]
PageSize = Annotated[int, Query(ge=1, le=100)]
Kind = Annotated[str | None, Query(pattern="^(server|agent)$")]
Status = Annotated[str | None, Query(pattern="^(pending|listed|delisted)$")]
SubjectKind = Annotated[str, Query(pattern="^(server|agent)$")]
Subject = Annotated[str, Query(min_length=1, max_length=200)]


# ---- public catalogue ---------------------------------------------------------------------------


@router.get("/goods", summary="Listed products, newest first (anyone)", response_model=ProductList)
async def list_goods(s: Session, page: PageNo = 1, page_size: PageSize = 20, kind: Kind = None) -> dict[str, Any]:
    return await service.products_page(s, page=page, page_size=page_size, full=False, kind=kind)


@router.post(
    "/goods/search", summary="Search listed products, pagination in the body (anyone)", response_model=ProductList
)
async def search_goods(s: Session, body: GoodsSearch) -> dict[str, Any]:
    return await service.products_page(
        s, page=body.page, page_size=body.page_size, full=False, query=body.query, kind=body.kind, seller=body.seller
    )


@router.get("/goods/{product_id}", summary="One listed product and its plans (anyone)", response_model=ProductRead)
async def get_goods(s: Session, product_id: UUID) -> dict[str, Any]:
    return await service.listed_product(s, product_id)


# ---- per-product routes, for merchants (their own) and admins (all) -----------------------------

Pid = Annotated[UUID, Path(description="the product's id")]
Scope = Callable[[Identity], UUID | None]  # which merchant's products the caller may touch (None: all)


def _product_routes(r: APIRouter, prefix: str, who_dep: Any, scope: Scope, label: str) -> None:
    caller = Depends(who_dep)

    @asynccontextmanager
    async def locked(s: AsyncSession, pid: UUID, who: Identity) -> AsyncIterator[Product]:
        """The caller's product (404 when not theirs), locked, in a transaction committed at the end."""
        async with s.begin():
            yield await service.lock_product(s, pid, scope(who))

    async def change(
        sessions: Sessions, pid: UUID, who: Identity, fn: Callable[[Any, Product], Awaitable[Any]]
    ) -> dict[str, Any]:
        """``fn`` on the locked product in one transaction, then the product as committed."""
        async with sessions() as s, locked(s, pid, who) as p:
            await fn(s, p)
        async with sessions() as s:
            return await service.product_detail(s, pid)

    @r.get(
        f"{prefix}/{{product_id}}", summary=f"One product with all its plans ({label})", response_model=ProductDetail
    )
    async def get_one(s: Session, product_id: Pid, who: Identity = caller) -> dict[str, Any]:
        p = await service.lock_product(s, product_id, scope(who))
        return await service.detail_view(s, p)

    @r.patch(
        f"{prefix}/{{product_id}}",
        summary=f"Edit a product's copy: title, description ({label})",
        response_model=ProductDetail,
    )
    async def edit(sessions: Sessions, product_id: Pid, body: CopyEdit, who: Identity = caller) -> dict[str, Any]:
        return await change(
            sessions, product_id, who, lambda s, p: service.edit_copy(s, p, who, body.title, body.description)
        )

    def listing(path: str, listed: bool, summary: str) -> None:
        @r.post(
            f"{prefix}/{{product_id}}/{path}",
            summary=f"{summary} ({label})",
            response_model=ProductDetail,
            name=f"{path}_it",
        )
        async def set_listing(
            sessions: Sessions, product_id: Pid, who: Identity = caller, body: ListingChange | None = None
        ) -> dict[str, Any]:
            reason = body.reason if body else None
            return await change(sessions, product_id, who, lambda s, p: service.set_listed(s, p, who, listed, reason))

    listing("list", True, "List a delisted product again")
    listing("delist", False, "Take a product out of the catalogue")

    @r.get(
        f"{prefix}/{{product_id}}/plans",
        summary=f"A product's plans, withdrawn ones too ({label})",
        response_model=PlanList,
    )
    async def plans(s: Session, product_id: Pid, who: Identity = caller) -> dict[str, Any]:
        p = await service.lock_product(s, product_id, scope(who))
        return await service.plan_list(s, p)

    @r.post(
        f"{prefix}/{{product_id}}/plans",
        status_code=201,
        summary=f"Define a raised plan ({label})",
        response_model=PlanRead,
    )
    async def add_plan(s: Session, product_id: Pid, body: PlanCreate, who: Identity = caller) -> dict[str, Any]:
        async with locked(s, product_id, who) as p:
            plan = await service.create_plan(s, p, who, body.model_dump())
            return service.plan_view(plan)

    @r.patch(
        f"{prefix}/{{product_id}}/plans/{{plan_id}}",
        summary=f"Change a plan (its holders' quotas follow) or withdraw it (active: false) ({label})",
        response_model=PlanRead,
    )
    async def edit_plan(
        s: Session, product_id: Pid, plan_id: UUID, body: PlanUpdate, who: Identity = caller
    ) -> dict[str, Any]:
        changes = body.model_dump(exclude_unset=True)
        async with locked(s, product_id, who) as p:
            plan = await service.change_plan(s, p, plan_id, who, changes)
            return service.plan_view(plan)

    @r.get(
        f"{prefix}/{{product_id}}/entitlements",
        summary=f"Who holds which plan of a product ({label})",
        response_model=EntitlementList,
    )
    async def entitlements(
        s: Session, product_id: Pid, who: Identity = caller, page: PageNo = 1, page_size: PageSize = 50
    ) -> dict[str, Any]:
        p = await service.lock_product(s, product_id, scope(who))
        return await service.entitlements_page(s, p, page, page_size)

    @r.put(
        f"{prefix}/{{product_id}}/entitlements/{{user_id}}",
        summary=f"Grant a user a plan of a product: their daily quota follows ({label})",
        response_model=EntitlementRead,
    )
    async def put_entitlement(
        s: Session, product_id: Pid, user_id: UUID, body: EntitlementGrant, who: Identity = caller
    ) -> dict[str, Any]:
        async with locked(s, product_id, who) as p:
            ent, plan = await service.grant(s, p, who, user_id, body.plan_id, body.expires_at, body.note)
            return service.entitlement_view(ent, plan)

    @r.delete(
        f"{prefix}/{{product_id}}/entitlements/{{user_id}}",
        status_code=204,
        summary=f"Revoke a user's plan: the free plan applies again ({label})",
    )
    async def delete_entitlement(s: Session, product_id: Pid, user_id: UUID, who: Identity = caller) -> Response:
        async with locked(s, product_id, who) as p:
            await service.revoke(s, p, who, user_id, None)
        return Response(status_code=204)

    @r.get(
        f"{prefix}/{{product_id}}/usage",
        summary=f"Calls, refusals and distinct pseudonymised users per day ({label})",
        response_model=ProductUsage,
    )
    async def product_usage(
        s: Session,
        settings: GoodsSettings,
        product_id: Pid,
        who: Identity = caller,
        since: date | None = None,
        until: date | None = None,
    ) -> dict[str, Any]:
        lo, hi = service.window(since, until, service.today(settings.day_zone))
        p = await service.lock_product(s, product_id, scope(who))
        return await service.product_usage(s, p, lo, hi, settings.day_zone)


MerchantDep = require_role("merchant")
_product_routes(router, "/merchant/products", MerchantDep, lambda who: who.user_id, "merchant: own products")
_product_routes(router, "/admin/goods", require_role("admin"), lambda who: None, "admin")
Merchant = Annotated[Identity, Depends(MerchantDep)]


@router.get("/merchant/products", summary="My products (merchant)", response_model=ProductDetailList)
async def my_products(
    s: Session, who: Merchant, page: PageNo = 1, page_size: PageSize = 20, kind: Kind = None, status: Status = None
) -> dict[str, Any]:
    return await service.products_page(
        s, page=page, page_size=page_size, full=True, kind=kind, status=status, merchant_id=who.user_id
    )


@router.get(
    "/merchant/usage",
    summary="Calls, refusals and distinct users per day over all my products (merchant)",
    response_model=MerchantUsage,
)
async def my_usage(
    s: Session, settings: GoodsSettings, who: Merchant, since: date | None = None, until: date | None = None
) -> dict[str, Any]:
    lo, hi = service.window(since, until, service.today(settings.day_zone))
    return await service.merchant_usage(s, who.user_id, lo, hi, settings.day_zone)


@router.get("/admin/goods", summary="Every product, any status (admin)", response_model=ProductDetailList)
async def all_products(
    s: Session,
    _: AdminUser,
    page: PageNo = 1,
    page_size: PageSize = 20,
    kind: Kind = None,
    status: Status = None,
    merchant_id: UUID | None = None,
) -> dict[str, Any]:
    return await service.products_page(
        s, page=page, page_size=page_size, full=True, kind=kind, status=status, merchant_id=merchant_id
    )


@router.put(
    "/admin/goods/{product_id}/merchant", summary="Assign a product's merchant (admin)", response_model=ProductDetail
)
async def put_merchant(sessions: Sessions, product_id: UUID, body: MerchantAssign, who: AdminUser) -> dict[str, Any]:
    async with sessions() as s, s.begin():
        p = await service.lock_product(s, product_id, None)
        await service.assign_merchant(s, p, who, body.merchant_id, body.follow_owner)
    async with sessions() as s:
        return await service.product_detail(s, product_id)


# ---- announcements ------------------------------------------------------------------------------


@router.get(
    "/announcements",
    summary="Published, unexpired announcements: pinned first, newest first (anyone)",
    response_model=AnnouncementList,
)
async def announcements(s: Session, page: PageNo = 1, page_size: PageSize = 20) -> dict[str, Any]:
    return await service.announcements_page(s, visible_only=True, page=page, page_size=page_size)


@router.get(
    "/announcements/{announcement_id}", summary="One published announcement (anyone)", response_model=AnnouncementRead
)
async def announcement(s: Session, announcement_id: UUID) -> dict[str, Any]:
    return await service.visible_announcement(s, announcement_id)


@router.get(
    "/admin/announcements",
    summary="Every announcement: scheduled, published, expired (superadmin)",
    response_model=AnnouncementList,
)
async def all_announcements(
    s: Session, _: SuperAdminUser, page: PageNo = 1, page_size: PageSize = 20
) -> dict[str, Any]:
    return await service.announcements_page(s, visible_only=False, page=page, page_size=page_size)


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


@router.post(
    "/admin/announcements",
    status_code=201,
    summary="Write an announcement; publish_at in the future schedules it (superadmin)",
    response_model=AnnouncementRead,
)
async def create_announcement(s: Session, body: AnnouncementCreate, who: SuperAdminUser) -> dict[str, Any]:
    async with s.begin():
        a = await service.create_announcement(s, who, _announcement_fields(body))
        return service.announcement_view(a)


@router.patch(
    "/admin/announcements/{announcement_id}",
    summary="Edit or reschedule an announcement (superadmin)",
    response_model=AnnouncementRead,
)
async def update_announcement(
    s: Session, announcement_id: UUID, body: AnnouncementUpdate, who: SuperAdminUser
) -> dict[str, Any]:
    async with s.begin():
        a = await service.lock_announcement(s, announcement_id)
        await service.update_announcement(s, a, who, _announcement_fields(body))
        return service.announcement_view(a)


@router.delete("/admin/announcements/{announcement_id}", status_code=204, summary="Delete an announcement (superadmin)")
async def delete_announcement(s: Session, announcement_id: UUID, who: SuperAdminUser) -> Response:
    async with s.begin():
        a = await service.lock_announcement(s, announcement_id)
        await service.delete_announcement(s, a, who)
    return Response(status_code=204)


# ---- internal queries (other services, with the platform's credential) -------------------------


@internal_router.get(
    "/entitlements/{user_id}", summary="A user's plan for one server or agent", response_model=EntitlementFor
)
async def internal_entitlement(
    s: Session, settings: GoodsSettings, user_id: UUID, _: PlatformCaller, kind: SubjectKind, subject: Subject
) -> dict[str, Any]:
    return await service.entitlement_for(s, user_id, kind, subject, settings)


@internal_router.get("/products/{product_id}", summary="One product, any status", response_model=ProductDetail)
async def internal_product(s: Session, product_id: UUID, _: PlatformCaller) -> dict[str, Any]:
    return await service.product_detail(s, product_id)


@internal_router.get("/products", summary="The product of a server (slug) or agent (id)", response_model=ProductDetail)
async def internal_product_by_subject(
    s: Session, _: PlatformCaller, kind: SubjectKind, subject: Subject
) -> dict[str, Any]:
    return await service.product_detail_by_subject(s, kind, subject)
