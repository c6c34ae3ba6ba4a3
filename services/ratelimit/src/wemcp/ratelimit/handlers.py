"""Event handlers: completed MCP calls become daily usage rows (history that survives losing Redis);
entitlements granted through goods become users' own daily limits."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.common.events.base import Event
from wemcp.common.events.calls import completed_calls
from wemcp.common.events.goods import EntitlementChanged
from wemcp.common.logging import get_logger
from wemcp.ratelimit import service
from wemcp.ratelimit.config import Settings
from wemcp.ratelimit.repository import USAGE_COUNTERS
from wemcp.ratelimit.service import NIL_USER, classify_call

log = get_logger("wemcp.ratelimit.handlers")

# The zone the usage day is cut in; set from the settings when the service starts (see main.py).
_zone = ZoneInfo(Settings.model_fields["day_zone"].default)


def configure(zone: str) -> None:
    global _zone
    _zone = ZoneInfo(zone)


def local_day(at: datetime) -> datetime:
    return at.astimezone(_zone)


async def on_calls_completed(events: Sequence[Event], session: AsyncSession) -> None:
    """A batch of completed calls (``mcp.call.batch`` envelopes and single ``mcp.call.completed``
    events) summed per usage row — (day, subject, user) — and written with one upsert for the batch.
    Sums commute, so the order of batches does not matter."""
    rows: dict[tuple[date, str, str, Any], dict[str, Any]] = {}
    for call in completed_calls(events):
        kind, subject, counters = classify_call(call)
        key = (local_day(call.occurred_at).date(), kind, subject, call.user_id or NIL_USER)
        row = rows.get(key)
        if row is None:
            rows[key] = row = dict.fromkeys(USAGE_COUNTERS, 0)
            row["latency_ms_sum"] = 0.0
        row["calls"] += 1
        for name, n in counters.items():
            row[name] += n
        row["latency_ms_sum"] += float(call.latency_ms)
    if rows:
        await service.add_usage(session, rows)


async def on_entitlement_changed(event: EntitlementChanged, session: AsyncSession, runtime: Any) -> None:
    """A user's plan for a server or agent, as goods decided it. Applied once (the bus records the
    event id with the change) and order-safe (a state older than the stored one changes nothing).
    Once committed, the policy snapshot is published again, so every quota client (the gateway's,
    the agents service's) uses the new limit within a moment."""
    applied = await service.apply_entitlement(session, event)
    if not applied:
        log.info("entitlement_stale", user=str(event.user_id), subject=event.subject_id, version=event.version)
        return
    if runtime is None or runtime.redis is None or runtime.sessions is None:
        return

    def committed(_session: Any) -> None:
        task = asyncio.get_running_loop().create_task(_republish(runtime))
        _pending.add(task)
        task.add_done_callback(_pending.discard)

    sa_event.listen(session.sync_session, "after_commit", committed, once=True)


_pending: set[asyncio.Task[None]] = set()


async def _republish(runtime: Any) -> None:
    try:
        await service.publish_policies(runtime.sessions, runtime.redis, runtime.settings)
    except Exception as exc:  # the snapshot keeper and the clients' max age catch up
        log.warning("policy_publish_failed", error=str(exc)[:200])
