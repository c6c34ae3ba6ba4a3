"""All SQL of the ratelimit service: policies and daily usage."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.ratelimit.models import DEFAULT_SUBJECT, FREE_PLAN, DailyUsage, QuotaPolicy, UserEntitlement


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


class EntitlementRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def current(self) -> Sequence[UserEntitlement]:
        """Active entitlements not yet expired: what the policy snapshot carries."""
        e = UserEntitlement
        rows = await self.session.execute(select(e).where(
            e.active, (e.expires_at.is_(None)) | (e.expires_at > func.now())))
        return rows.scalars().all()

    async def apply(self, *, user_id: uuid.UUID, kind: str, subject_id: str, entitlement_id: uuid.UUID,
                    plan_code: str, per_user_daily: int | None, expires_at: Any, active: bool,
                    version: int) -> bool:
        """Keeps the state with the highest version per (user, subject); False when this one is older
        than (or the same as) what is stored."""
        e = UserEntitlement
        values = dict(user_id=user_id, subject_kind=kind, subject_id=subject_id, entitlement_id=entitlement_id,
                      plan_code=plan_code, per_user_daily=per_user_daily, expires_at=expires_at, active=active,
                      version=version)
        stmt = pg_insert(e).values(**values)
        res = await self.session.execute(stmt.on_conflict_do_update(
            index_elements=[e.user_id, e.subject_kind, e.subject_id],
            set_={**{k: v for k, v in values.items() if k not in ("user_id", "subject_kind", "subject_id")},
                  "updated_at": func.now()},
            where=e.version < stmt.excluded.version)
            .returning(e.version))
        return res.first() is not None


USAGE_COUNTERS = ("calls", "metered", "own_key", "in_agent_run", "refused", "errors")
_SUMS = (*USAGE_COUNTERS, "latency_ms_sum")
_ARRAYS = ", ".join(["CAST(:days AS date[])", "CAST(:kinds AS text[])", "CAST(:ids AS text[])",
                     "CAST(:users AS uuid[])", *(f"CAST(:{c} AS bigint[])" for c in USAGE_COUNTERS),
                     "CAST(:latency_ms_sum AS float8[])"])
# the table and column names are our own constants, values are bound parameters
_ADD_USAGE = text(
    f"INSERT INTO {DailyUsage.__table__.fullname} AS u (day, subject_kind, subject_id, user_id, {', '.join(_SUMS)}) "  # noqa: S608
    f"SELECT * FROM unnest({_ARRAYS}) ON CONFLICT (day, subject_kind, subject_id, user_id) DO UPDATE SET "
    f"{', '.join(f'{c} = u.{c} + excluded.{c}' for c in _SUMS)}, updated_at = now()")


class UsageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_many(self, rows: dict[tuple[date, str, str, uuid.UUID], dict[str, Any]]) -> None:
        """Add counters to daily usage rows, keyed (day, subject kind, subject id, user): one upsert
        over arrays (one prepared statement whatever the number of rows). Keys are unique (one
        statement cannot touch a row twice) and sorted, so concurrent writers lock rows in the same
        order."""
        keys = sorted(rows, key=_sort_key)
        params: dict[str, list[Any]] = {"days": [k[0] for k in keys], "kinds": [k[1] for k in keys],
                                        "ids": [k[2] for k in keys], "users": [k[3] for k in keys]}
        for name in _SUMS:
            params[name] = [rows[k][name] for k in keys]
        await self.session.execute(_ADD_USAGE, params)

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

    async def per_day_for_user(self, user_id: uuid.UUID, since: date, until: date) -> list[dict[str, Any]]:
        """One user's calls per day over every server and agent (the ``ix_daily_usage_user_day`` index)."""
        u = DailyUsage
        rows = await self.session.execute(
            select(u.day, func.sum(u.calls), func.sum(u.metered), func.sum(u.own_key), func.sum(u.in_agent_run),
                   func.sum(u.refused), func.sum(u.errors))
            .where(u.user_id == user_id, u.day >= since, u.day <= until)
            .group_by(u.day).order_by(u.day))
        return [dict(day=day, calls=int(c), metered=int(m), own_key=int(o), in_agent_run=int(a), refused=int(r),
                     errors=int(e)) for day, c, m, o, a, r, e in rows.all()]

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


def _sort_key(key: tuple[date, str, str, uuid.UUID]) -> tuple[date, str, str, str]:
    day, kind, sid, user = key
    return day, kind, sid, str(user)
