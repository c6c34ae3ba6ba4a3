"""All SQL of the ratelimit service: policies and daily usage."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.ratelimit.models import DEFAULT_SUBJECT, FREE_PLAN, DailyUsage, QuotaPolicy


class PolicyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def all_free_tier(self) -> Sequence[QuotaPolicy]:
        rows = await self.session.execute(
            select(QuotaPolicy).where(QuotaPolicy.plan == FREE_PLAN)
            .order_by(QuotaPolicy.subject_kind, QuotaPolicy.subject_id))
        return rows.scalars().all()

    async def get(self, kind: str, subject_id: str) -> QuotaPolicy | None:
        return await self.session.get(QuotaPolicy, (kind, subject_id, FREE_PLAN))

    async def upsert(self, kind: str, subject_id: str, *, per_user_daily: int | None,
                     global_daily_cap: int | None, note: str, updated_by: uuid.UUID | None) -> None:
        values = dict(subject_kind=kind, subject_id=subject_id, plan=FREE_PLAN, per_user_daily=per_user_daily,
                      global_daily_cap=global_daily_cap, note=note, updated_by=updated_by)
        stmt = pg_insert(QuotaPolicy).values(**values)
        await self.session.execute(stmt.on_conflict_do_update(
            index_elements=[QuotaPolicy.subject_kind, QuotaPolicy.subject_id, QuotaPolicy.plan],
            set_=dict(per_user_daily=per_user_daily, global_daily_cap=global_daily_cap, note=note,
                      updated_by=updated_by, updated_at=func.now())))

    async def delete(self, kind: str, subject_id: str) -> bool:
        if subject_id == DEFAULT_SUBJECT:
            return False
        res: Any = await self.session.execute(delete(QuotaPolicy).where(
            QuotaPolicy.subject_kind == kind, QuotaPolicy.subject_id == subject_id,
            QuotaPolicy.plan == FREE_PLAN))
        return bool(res.rowcount)


class UsageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, *, day: date, kind: str, subject_id: str, user_id: uuid.UUID, metered: int,
                  own_key: int, in_agent_run: int, refused: int, errors: int, latency_ms: float) -> None:
        t = DailyUsage.__table__
        stmt = pg_insert(DailyUsage).values(
            day=day, subject_kind=kind, subject_id=subject_id, user_id=user_id, calls=1, metered=metered,
            own_key=own_key, in_agent_run=in_agent_run, refused=refused, errors=errors,
            latency_ms_sum=latency_ms)
        ex = stmt.excluded
        await self.session.execute(stmt.on_conflict_do_update(
            index_elements=[t.c.day, t.c.subject_kind, t.c.subject_id, t.c.user_id],
            set_=dict(calls=t.c.calls + ex.calls, metered=t.c.metered + ex.metered,
                      own_key=t.c.own_key + ex.own_key, in_agent_run=t.c.in_agent_run + ex.in_agent_run,
                      refused=t.c.refused + ex.refused, errors=t.c.errors + ex.errors,
                      latency_ms_sum=t.c.latency_ms_sum + ex.latency_ms_sum, updated_at=func.now())))

    async def for_user_day(self, user_id: uuid.UUID, day: date) -> Sequence[DailyUsage]:
        rows = await self.session.execute(select(DailyUsage).where(
            DailyUsage.user_id == user_id, DailyUsage.day == day)
            .order_by(DailyUsage.subject_kind, DailyUsage.subject_id))
        return rows.scalars().all()

    async def per_day(self, kind: str, subject_id: str, since: date, until: date) -> list[dict[str, Any]]:
        u = DailyUsage
        rows = await self.session.execute(
            select(u.day, func.sum(u.calls), func.sum(u.metered), func.sum(u.own_key),
                   func.sum(u.in_agent_run), func.sum(u.refused), func.sum(u.errors),
                   func.count(u.user_id), func.sum(u.latency_ms_sum))
            .where(u.subject_kind == kind, u.subject_id == subject_id, u.day >= since, u.day <= until)
            .group_by(u.day).order_by(u.day))
        out = []
        for day, calls, metered, own, agent, refused, errors, users, lat in rows.all():
            out.append(dict(day=day, calls=int(calls), metered=int(metered), own_key=int(own),
                            in_agent_run=int(agent), refused=int(refused), errors=int(errors),
                            users=int(users),
                            avg_latency_ms=round(float(lat) / int(calls), 2) if calls else 0.0))
        return out

    async def per_subject(self, kind: str, day: date, offset: int,
                          limit: int) -> tuple[list[dict[str, Any]], int]:
        """One day's totals per server (or agent), busiest first."""
        u = DailyUsage
        where = (u.subject_kind == kind, u.day == day)
        total = (await self.session.execute(
            select(func.count(func.distinct(u.subject_id))).where(*where))).scalar_one()
        calls = func.sum(u.calls).label("calls")
        rows = await self.session.execute(
            select(u.subject_id, calls, func.sum(u.metered), func.sum(u.own_key), func.sum(u.in_agent_run),
                   func.sum(u.refused), func.sum(u.errors), func.count(u.user_id))
            .where(*where).group_by(u.subject_id).order_by(calls.desc(), u.subject_id)
            .offset(offset).limit(limit))
        items = [dict(id=sid, calls=int(c), metered=int(m), own_key=int(o), in_agent_run=int(a),
                      refused=int(r), errors=int(e), users=int(n))
                 for sid, c, m, o, a, r, e, n in rows.all()]
        return items, int(total)
