"""HTTP API: policies (admin), the caller's usage today, usage per server or agent and day (admin)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from wemcp.common.identity import AdminUser, CurrentUser
from wemcp.common.pagination import Page
from wemcp.ratelimit import service
from wemcp.ratelimit.deps import Quota, Session, State
from wemcp.ratelimit.schemas import (
    KIND_OF,
    SUBJECT_PATTERN,
    KindPath,
    LimitsRead,
    MyDaysRead,
    MyUsageRead,
    OverrideRead,
    PoliciesRead,
    PolicyUpdate,
    SubjectDayUsage,
    SubjectPolicyRead,
    SubjectUsageRead,
    UsageSearch,
)

router = APIRouter(prefix="/api/v1", tags=["ratelimit"])
SubjectId = Annotated[str, Path(pattern=SUBJECT_PATTERN, description="server slug or agent id")]
IdList = Annotated[list[Annotated[str, Query(pattern=SUBJECT_PATTERN)]], Query(max_length=50)]


async def _republish(st: State) -> None:
    await service.publish_policies(st.sessions, st.redis, st.settings)


@router.get("/policies", response_model=PoliciesRead, summary="All quota policies (admin)")
async def list_policies(st: State, s: Session, _: AdminUser) -> PoliciesRead:
    ps, rows = await service.policies(s, st.settings)
    return PoliciesRead(
        defaults={k: LimitsRead(per_user_daily=v.per_user_daily, global_daily_cap=v.global_daily_cap)
                  for k, v in ps.defaults.items()},
        overrides=[OverrideRead(kind=k, id=i, per_user_daily=o.per_user_daily,
                                global_daily_cap=o.global_daily_cap, note=rows[(k, i)].note)
                   for (k, i), o in ps.overrides.items()])


@router.put("/policies/defaults/{kind}", response_model=LimitsRead, summary="Set a kind's default (admin)")
async def put_default(st: State, s: Session, kind: KindPath, body: PolicyUpdate, admin: AdminUser) -> LimitsRead:
    async with s.begin():
        await service.set_default(s, KIND_OF[kind], body.per_user_daily, body.global_daily_cap, body.note,
                                  admin.user_id)
    await _republish(st)
    return LimitsRead(per_user_daily=body.per_user_daily, global_daily_cap=body.global_daily_cap)


async def _subject_policy(st: State, s: Session, kind: str, subject_id: str) -> SubjectPolicyRead:
    eff, row = await service.subject_policy(s, st.settings, kind, subject_id)
    override = None
    if row is not None:
        override = OverrideRead(kind=kind, id=subject_id, per_user_daily=row.per_user_daily,
                                global_daily_cap=row.global_daily_cap, note=row.note)
    return SubjectPolicyRead(kind=kind, id=subject_id,
                             effective=LimitsRead(per_user_daily=eff.per_user_daily,
                                                  global_daily_cap=eff.global_daily_cap), override=override)


@router.get("/policies/{kind}/{subject_id}", response_model=SubjectPolicyRead,
            summary="Effective policy of one server or agent (admin)")
async def get_policy(st: State, s: Session, kind: KindPath, subject_id: SubjectId,
                     _: AdminUser) -> SubjectPolicyRead:
    return await _subject_policy(st, s, KIND_OF[kind], subject_id)


@router.put("/policies/{kind}/{subject_id}", response_model=SubjectPolicyRead,
            summary="Override one server's or agent's limits (admin)")
async def put_policy(st: State, s: Session, kind: KindPath, subject_id: SubjectId, body: PolicyUpdate,
                     admin: AdminUser) -> SubjectPolicyRead:
    async with s.begin():
        await service.set_override(s, KIND_OF[kind], subject_id, body.per_user_daily, body.global_daily_cap,
                                   body.note, admin.user_id)
    await _republish(st)
    return await _subject_policy(st, s, KIND_OF[kind], subject_id)


@router.delete("/policies/{kind}/{subject_id}", status_code=204, summary="Remove an override (admin)")
async def delete_policy(st: State, s: Session, kind: KindPath, subject_id: SubjectId, _: AdminUser) -> Response:
    async with s.begin():
        await service.remove_override(s, KIND_OF[kind], subject_id)
    await _republish(st)
    return Response(status_code=204)


@router.get("/me/usage", response_model=MyUsageRead,
            summary="Today's calls and remaining free quota per server and agent")
async def my_usage(s: Session, quota: Quota, user: CurrentUser, server: IdList = [],  # noqa: B006
                   agent: IdList = []) -> dict[str, Any]:  # noqa: B006
    """Every server and agent the caller used today, plus any asked for with ``?server=`` /
    ``?agent=``. ``used`` and ``remaining`` come from the live counters (``source: redis``), or from
    the usage rows when Redis is away (``source: database``)."""
    extra = [("server", sid) for sid in server] + [("agent", a) for a in agent]
    return await service.me_usage(s, quota, user.user_id, extra)


@router.get("/me/usage/days", response_model=MyDaysRead, summary="My calls per day, the last N days")
async def my_usage_days(s: Session, quota: Quota, user: CurrentUser,
                        days: Annotated[int, Query(ge=1, le=366)] = 30) -> dict[str, Any]:
    """The caller's own calls per local day (the quota's zone), up to today, every day present. Only
    ever the caller's: there is no user parameter."""
    return await service.my_days(s, quota, user.user_id, days)


@router.get("/usage/{kind}/{subject_id}", response_model=SubjectUsageRead, response_model_exclude_unset=True,
            summary="Usage of one server or agent per day (admin)")
async def subject_usage(s: Session, quota: Quota, kind: KindPath, subject_id: SubjectId, _: AdminUser,
                        since: date | None = None, until: date | None = None) -> dict[str, Any]:
    return await service.subject_usage(s, quota, KIND_OF[kind], subject_id, since, until)


@router.post("/usage/search", response_model=Page[SubjectDayUsage],
             summary="One day's usage per server or agent, busiest first (admin)")
async def search_usage(s: Session, quota: Quota, body: UsageSearch, _: AdminUser) -> Page[SubjectDayUsage]:
    items, total = await service.subjects_on_day(s, quota, body.kind, body.day, body.offset, body.limit)
    return Page.of([SubjectDayUsage(**i) for i in items], total, body)
