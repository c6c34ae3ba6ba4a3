"""Event handlers: completed MCP calls become daily usage rows (history that survives losing Redis)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.common.events.calls import McpCallCompleted
from wemcp.ratelimit.config import Settings
from wemcp.ratelimit.repository import UsageRepository
from wemcp.ratelimit.service import NIL_USER, classify_call

# The zone the usage day is cut in; set from the settings when the service starts (see main.py).
_zone = ZoneInfo(Settings.model_fields["day_zone"].default)


def configure(zone: str) -> None:
    global _zone
    _zone = ZoneInfo(zone)


def local_day(at: datetime) -> datetime:
    return at.astimezone(_zone)


async def on_mcp_call_completed(event: McpCallCompleted, session: AsyncSession) -> None:
    kind, subject, counters = classify_call(event)
    await UsageRepository(session).add(day=local_day(event.occurred_at).date(), kind=kind, subject_id=subject,
                                       user_id=event.user_id or NIL_USER, latency_ms=float(event.latency_ms),
                                       **counters)
