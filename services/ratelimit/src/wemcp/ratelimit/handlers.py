"""Event handlers: completed MCP calls become daily usage rows (history that survives losing Redis)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.common.events.base import Event
from wemcp.common.events.calls import completed_calls
from wemcp.ratelimit.config import Settings
from wemcp.ratelimit.repository import USAGE_COUNTERS, UsageRepository
from wemcp.ratelimit.service import NIL_USER, classify_call

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
        await UsageRepository(session).add_many(rows)
