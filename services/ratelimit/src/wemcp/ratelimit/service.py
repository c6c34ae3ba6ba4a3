"""Use cases: policies (Postgres → Redis snapshot → every quota client) and usage reports."""

from __future__ import annotations

import time
import uuid
from datetime import date, timedelta
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from wemcp.common.errors import NotFound, Unprocessable
from wemcp.common.events.goods import EntitlementChanged
from wemcp.quota.client import OWN_KEY_SOURCES, QuotaClient
from wemcp.quota.policy import Limits, Override, PolicySet, publish_snapshot
from wemcp.ratelimit.config import Settings
from wemcp.ratelimit.models import DEFAULT_SUBJECT, QuotaPolicy
from wemcp.ratelimit.repository import EntitlementRepository, PolicyRepository, UsageRepository

NIL_USER = uuid.UUID(int=0)  # anonymous calls are recorded under the nil UUID


async def load_policy_set(session: AsyncSession, settings: Settings) -> PolicySet:
    defaults = settings.default_limits()
    overrides: dict[tuple[str, str], Override] = {}
    for row in await PolicyRepository(session).all_free_tier():
        if row.subject_id == DEFAULT_SUBJECT:
            defaults[row.subject_kind] = Limits(row.per_user_daily, row.global_daily_cap)
        else:
            overrides[(row.subject_kind, row.subject_id)] = Override(row.per_user_daily, row.global_daily_cap)
    entitlements = {(e.subject_kind, e.subject_id, str(e.user_id)):
                    (e.per_user_daily, e.expires_at.timestamp() if e.expires_at else None)
                    for e in await EntitlementRepository(session).current()}
    return PolicySet(defaults=defaults, overrides=overrides, version=time.time_ns() // 1_000_000,
                     entitlements=entitlements)


async def publish_policies(sessions: async_sessionmaker[AsyncSession], redis: Redis,
                           settings: Settings) -> PolicySet:
    """Called after a committed change (and at start-up): every quota client reloads."""
    async with sessions() as session:
        policies = await load_policy_set(session, settings)
    await publish_snapshot(redis, policies)
    return policies


async def policies(session: AsyncSession, settings: Settings) -> tuple[PolicySet, dict[tuple[str, str], QuotaPolicy]]:
    """The policy set in force, and the stored rows by (kind, subject id) (their notes)."""
    ps = await load_policy_set(session, settings)
    rows = {(r.subject_kind, r.subject_id): r for r in await PolicyRepository(session).all_free_tier()}
    return ps, rows


async def subject_policy(session: AsyncSession, settings: Settings, kind: str,
                         subject_id: str) -> tuple[Limits, QuotaPolicy | None]:
    """One server's or agent's effective limits, and its override (None when it has none)."""
    ps = await load_policy_set(session, settings)
    row = await PolicyRepository(session).get(kind, subject_id)
    override = row if row is not None and subject_id != DEFAULT_SUBJECT else None
    return ps.limits(kind, subject_id), override


async def set_default(session: AsyncSession, kind: str, per_user_daily: int | None,
                      global_daily_cap: int | None, note: str, by: uuid.UUID) -> None:
    if kind == "agent" and global_daily_cap is not None:
        raise Unprocessable("a global daily cap applies to servers only")
    await PolicyRepository(session).upsert(kind, DEFAULT_SUBJECT, per_user_daily=per_user_daily,
                                           global_daily_cap=global_daily_cap, note=note, updated_by=by)


async def set_override(session: AsyncSession, kind: str, subject_id: str, per_user_daily: int | None,
                       global_daily_cap: int | None, note: str, by: uuid.UUID) -> None:
    if kind == "agent" and global_daily_cap is not None:
        raise Unprocessable("a global daily cap applies to servers only")
    await PolicyRepository(session).upsert(kind, subject_id, per_user_daily=per_user_daily,
                                           global_daily_cap=global_daily_cap, note=note, updated_by=by)


async def remove_override(session: AsyncSession, kind: str, subject_id: str) -> None:
    if not await PolicyRepository(session).delete(kind, subject_id):
        raise NotFound(f"no override for {kind} {subject_id!r}")


async def apply_entitlement(session: AsyncSession, event: EntitlementChanged) -> bool:
    """A user's plan for a server or agent, as goods decided it; False when the stored state is as new
    or newer (the highest version wins whatever the arrival order)."""
    return await EntitlementRepository(session).apply(
        user_id=event.user_id, kind=event.subject_kind, subject_id=event.subject_id,
        entitlement_id=event.entitlement_id, plan_code=event.plan_code, per_user_daily=event.per_user_daily,
        expires_at=event.expires_at, active=event.active, version=event.version)


async def add_usage(session: AsyncSession, rows: dict[tuple[date, str, str, uuid.UUID], dict[str, Any]]) -> None:
    """Add summed counters to the daily usage rows, keyed (day, subject kind, subject id, user)."""
    await UsageRepository(session).add_many(rows)


def classify_call(event: Any) -> tuple[str, str, dict[str, int]]:
    """Which subject a completed call belongs to, and which counters it bumps.

    A call *to an agent* (agent_id set, not itself inside a run) is the agent's; every other call,
    including the MCP calls an agent makes inside its run, is the server's."""
    if event.agent_id is not None and not event.in_agent_run:
        kind, subject = "agent", str(event.agent_id)
    else:
        kind, subject = "server", event.server_slug
    own = event.key_source in OWN_KEY_SOURCES
    counters = dict(
        metered=int(event.metered and not own and not event.in_agent_run and event.status != "refused"),
        own_key=int(own), in_agent_run=int(event.in_agent_run), refused=int(event.status == "refused"),
        errors=int(event.status in ("error", "timeout")))
    return kind, subject, counters


async def me_usage(session: AsyncSession, quota: QuotaClient, user_id: uuid.UUID,
                   extra: list[tuple[str, str]]) -> dict[str, Any]:
    day = quota.day()
    today = day.date
    found = await UsageRepository(session).for_user_day(user_id, today)
    rows = {(r.subject_kind, r.subject_id): r for r in found}
    subjects = list(dict.fromkeys([*rows.keys(), *extra]))
    source = "redis"
    try:
        used = await quota.used_today(user_id, subjects)
    except Exception:
        # Redis lost: Postgres still knows what completed (it lags the counters by the event delay)
        source = "database"
        used = [rows[s].metered if s in rows else 0 for s in subjects]
    out: dict[str, list[dict[str, Any]]] = {"server": [], "agent": []}
    now = quota.clock()
    for (kind, sid), n in zip(subjects, used, strict=True):
        limit = quota.policies.limits(kind, sid).per_user_daily
        entitled, plan_limit = quota.policies.entitlement(kind, sid, str(user_id), now)
        if entitled:
            limit = plan_limit
        r = rows.get((kind, sid))
        out[kind].append({
            "id": sid, "used": n, "limit": limit, "plan": "entitled" if entitled else "free",
            "remaining": None if limit is None else max(limit - n, 0),
            "calls": r.calls if r else 0, "own_key": r.own_key if r else 0,
            "in_agent_run": r.in_agent_run if r else 0, "refused": r.refused if r else 0})
    return {"day": today.isoformat(), "zone": quota.zone, "reset_at": day.reset_at.isoformat(),
            "source": source, "servers": out["server"], "agents": out["agent"]}


_DAY_COUNTERS = ("calls", "metered", "own_key", "in_agent_run", "refused", "errors")


async def my_days(session: AsyncSession, quota: QuotaClient, user_id: uuid.UUID, days: int) -> dict[str, Any]:
    """The caller's own calls per local day, the last ``days`` days up to today, every day present
    (zeros where nothing was called) so a chart needs no gap filling."""
    until = quota.day().date
    since = until - timedelta(days=days - 1)
    found = {r["day"]: r for r in await UsageRepository(session).per_day_for_user(user_id, since, until)}
    out = []
    for i in range(days):
        day = since + timedelta(days=i)
        row = found.get(day) or dict.fromkeys(_DAY_COUNTERS, 0)
        out.append({"day": day.isoformat(), **{k: row[k] for k in _DAY_COUNTERS}})
    return {"since": since.isoformat(), "until": until.isoformat(), "zone": quota.zone, "days": out}


async def subject_usage(session: AsyncSession, quota: QuotaClient, kind: str, subject_id: str,
                        since: date | None, until: date | None) -> dict[str, Any]:
    today = quota.day().date
    until = until or today
    since = since or until.replace(day=1)
    if since > until:
        raise Unprocessable("since must not be after until")
    if (until - since).days > 366:
        raise Unprocessable("ask for at most 366 days at a time")
    days = await UsageRepository(session).per_day(kind, subject_id, since, until)
    limits = quota.policies.limits(kind, subject_id)
    body: dict[str, Any] = {"kind": kind, "id": subject_id, "since": since.isoformat(),
                            "until": until.isoformat(), "zone": quota.zone,
                            "per_user_daily": limits.per_user_daily, "days": days}
    if kind == "server":
        body["global_daily_cap"] = limits.global_daily_cap
        try:
            body["global_used_today"] = await quota.global_used_today(subject_id)
        except Exception:
            body["global_used_today"] = None
    return body


async def subjects_on_day(session: AsyncSession, quota: QuotaClient, kind: str, day: date | None, offset: int,
                          limit: int) -> tuple[list[dict[str, Any]], int]:
    """One day's usage per server (or agent), busiest first, and how many there are; ``day`` defaults
    to today (the quota's zone)."""
    return await UsageRepository(session).per_subject(kind, day or quota.day().date, offset, limit)
