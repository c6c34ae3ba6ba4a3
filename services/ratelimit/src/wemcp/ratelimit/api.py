"""HTTP API: policies (admin), the caller's usage today, usage per server or agent and day (admin)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from wemcp.common.errors import NotFound
from wemcp.common.identity import AdminUser, CurrentUser
from wemcp.common.pagination import Page
from wemcp.quota.client import QuotaClient
from wemcp.ratelimit import service
from wemcp.ratelimit.models import DEFAULT_SUBJECT
from wemcp.ratelimit.repository import PolicyRepository, UsageRepository
from wemcp.ratelimit.schemas import (
    KIND_OF,
    SUBJECT_PATTERN,
    KindPath,
    LimitsRead,
    MyDaysRead,
    OverrideRead,
    PoliciesRead,
    PolicyUpdate,
    SubjectDayUsage,
    SubjectPolicyRead,
    UsageSearch,
)

router = APIRouter(prefix="/api/v1", tags=["ratelimit"])
SubjectId = Annotated[str, Path(pattern=SUBJECT_PATTERN, description="server slug or agent id")]
IdList = Annotated[list[Annotated[str, Query(pattern=SUBJECT_PATTERN)]], Query(max_length=50)]


def _rt(request: Request) -> Any:
    return request.app.state.runtime


def _quota(request: Request) -> QuotaClient:
    return _rt(request).extras["quota"]


async def _republish(request: Request) -> None:
    rt = _rt(request)
    await service.publish_policies(rt.sessions, rt.redis, rt.settings)


@router.get("/policies", response_model=PoliciesRead, summary="All quota policies (admin)")
async def list_policies(request: Request, _: AdminUser) -> PoliciesRead:
    rt = _rt(request)
    async with rt.sessions() as s:
        ps = await service.load_policy_set(s, rt.settings)
        rows = {(r.subject_kind, r.subject_id): r for r in await PolicyRepository(s).all_free_tier()}
    return PoliciesRead(
        defaults={k: LimitsRead(per_user_daily=v.per_user_daily, global_daily_cap=v.global_daily_cap)
                  for k, v in ps.defaults.items()},
        overrides=[OverrideRead(kind=k, id=i, per_user_daily=o.per_user_daily,
                                global_daily_cap=o.global_daily_cap, note=rows[(k, i)].note)
                   for (k, i), o in ps.overrides.items()])


@router.put("/policies/defaults/{kind}", response_model=LimitsRead, summary="Set a kind's default (admin)")
async def put_default(request: Request, kind: KindPath, body: PolicyUpdate, admin: AdminUser) -> LimitsRead:
    rt = _rt(request)
    async with rt.sessions() as s, s.begin():
        await service.set_default(s, KIND_OF[kind], body.per_user_daily, body.global_daily_cap, body.note,
                                  admin.user_id)
    await _republish(request)
    return LimitsRead(per_user_daily=body.per_user_daily, global_daily_cap=body.global_daily_cap)


@router.get("/policies/{kind}/{subject_id}", response_model=SubjectPolicyRead,
            summary="Effective policy of one server or agent (admin)")
async def get_policy(request: Request, kind: KindPath, subject_id: SubjectId,
                     _: AdminUser) -> SubjectPolicyRead:
    rt = _rt(request)
    k = KIND_OF[kind]
    async with rt.sessions() as s:
        ps = await service.load_policy_set(s, rt.settings)
        row = await PolicyRepository(s).get(k, subject_id)
    eff = ps.limits(k, subject_id)
    override = None
    if row is not None and subject_id != DEFAULT_SUBJECT:
        override = OverrideRead(kind=k, id=subject_id, per_user_daily=row.per_user_daily,
                                global_daily_cap=row.global_daily_cap, note=row.note)
    return SubjectPolicyRead(kind=k, id=subject_id,
                             effective=LimitsRead(per_user_daily=eff.per_user_daily,
                                                  global_daily_cap=eff.global_daily_cap), override=override)


@router.put("/policies/{kind}/{subject_id}", response_model=SubjectPolicyRead,
            summary="Override one server's or agent's limits (admin)")
async def put_policy(request: Request, kind: KindPath, subject_id: SubjectId, body: PolicyUpdate,
                     admin: AdminUser) -> SubjectPolicyRead:
    rt = _rt(request)
    async with rt.sessions() as s, s.begin():
        await service.set_override(s, KIND_OF[kind], subject_id, body.per_user_daily, body.global_daily_cap,
                                   body.note, admin.user_id)
    await _republish(request)
    return await get_policy(request, kind, subject_id, admin)


@router.delete("/policies/{kind}/{subject_id}", status_code=204, summary="Remove an override (admin)")
async def delete_policy(request: Request, kind: KindPath, subject_id: SubjectId, _: AdminUser) -> Response:
    rt = _rt(request)
    async with rt.sessions() as s, s.begin():
        deleted = await PolicyRepository(s).delete(KIND_OF[kind], subject_id)
    if not deleted:
        raise NotFound(f"no override for {KIND_OF[kind]} {subject_id!r}")
    await _republish(request)
    return Response(status_code=204)


@router.get("/me/usage", summary="Today's calls and remaining free quota per server and agent")
async def my_usage(request: Request, user: CurrentUser, server: IdList = [],  # noqa: B006
                   agent: IdList = []) -> dict[str, Any]:  # noqa: B006
    """Every server and agent the caller used today, plus any asked for with ``?server=`` /
    ``?agent=``. ``used`` and ``remaining`` come from the live counters (``source: redis``), or from
    the usage rows when Redis is away (``source: database``)."""
    extra = [("server", s) for s in server] + [("agent", a) for a in agent]
    async with _rt(request).sessions() as s:
        return await service.me_usage(s, _quota(request), user.user_id, extra)


@router.get("/me/usage/days", response_model=MyDaysRead, summary="My calls per day, the last N days")
async def my_usage_days(request: Request, user: CurrentUser,
                        days: Annotated[int, Query(ge=1, le=366)] = 30) -> dict[str, Any]:
    """The caller's own calls per local day (the quota's zone), up to today, every day present. Only
    ever the caller's: there is no user parameter."""
    async with _rt(request).sessions() as s:
        return await service.my_days(s, _quota(request), user.user_id, days)


@router.get("/usage/{kind}/{subject_id}", summary="Usage of one server or agent per day (admin)")
async def subject_usage(request: Request, kind: KindPath, subject_id: SubjectId, _: AdminUser,
                        since: date | None = None, until: date | None = None) -> dict[str, Any]:
    async with _rt(request).sessions() as s:
        return await service.subject_usage(s, _quota(request), KIND_OF[kind], subject_id, since, until)


@router.post("/usage/search", response_model=Page[SubjectDayUsage],
             summary="One day's usage per server or agent, busiest first (admin)")
async def search_usage(request: Request, body: UsageSearch, _: AdminUser) -> Page[SubjectDayUsage]:
    day = body.day or _quota(request).day().date
    async with _rt(request).sessions() as s:
        items, total = await UsageRepository(s).per_subject(body.kind, day, body.offset, body.limit)
    return Page.of([SubjectDayUsage(**i) for i in items], total, body)
