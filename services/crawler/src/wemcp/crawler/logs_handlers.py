"""The request log's consumers and upkeep.

- ``mcp.call.batch`` / ``mcp.call.completed`` (one batch consumer, durable ``crawler-logs-calls``):
  every call becomes a ``call_logs`` row (one ``COPY`` per batch, in the transaction that records the
  batch as processed, so a batch is written once), and the call metrics are recorded
  (``wemcp.mcp.calls``, ``wemcp.mcp.call.duration``, ``wemcp.quota.decisions``) — here rather than in
  the gateway, whose hot path does no metric work per call.
- ``server.submitted`` (durable ``crawler-logs-server-submitted``): who owns which slug, for the owner
  view.
- a maintenance task: day partitions created ahead and dropped past the retention, at start and every
  ``logs_maintenance_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from wemcp.common import metrics
from wemcp.common.bus import BatchSubscription, Subscription
from wemcp.common.events.base import Event
from wemcp.common.events.calls import McpCallCompleted, McpCallsCompleted, completed_calls
from wemcp.common.events.servers import ServerSubmitted
from wemcp.common.logging import get_logger
from wemcp.common.service import Runtime
from wemcp.crawler.config import Settings
from wemcp.crawler.logs_store import Partitions, insert_calls, record_owner

log = get_logger("wemcp.crawler.logs")

CALLS_DURABLE = "crawler-logs-calls"
OWNERS_DURABLE = "crawler-logs-server-submitted"

# Methods a metric label may carry; anything else a client sent is "other" (bounded label values).
MCP_METHODS = frozenset({
    "initialize", "ping", "tools/list", "tools/call", "prompts/list", "prompts/get", "resources/list",
    "resources/read", "resources/templates/list", "resources/subscribe", "resources/unsubscribe",
    "completion/complete", "logging/setLevel", "notifications/initialized", "notifications/cancelled",
})
QUOTA_REFUSED, QUOTA_UNAVAILABLE = -32029, -32030


@dataclass
class LogsState:
    settings: Settings
    partitions: Partitions = field(default_factory=Partitions)
    task: asyncio.Task[None] | None = None
    written: int = 0


class CallMetrics:
    def __init__(self) -> None:
        self.calls = metrics.instrument(metrics.MCP_CALLS, "wemcp.crawler.logs")
        self.duration = metrics.instrument(metrics.MCP_CALL_DURATION, "wemcp.crawler.logs")
        self.quota = metrics.instrument(metrics.QUOTA_DECISIONS, "wemcp.crawler.logs")

    def record(self, calls: Sequence[McpCallCompleted]) -> None:
        counts: Counter[tuple[str, str, str]] = Counter()
        quota: Counter[tuple[str, str]] = Counter()
        for c in calls:
            method = c.method if c.method in MCP_METHODS else "other"
            key = (c.server_slug, method, c.status)
            counts[key] += 1
            self.duration.record(c.latency_ms, {"server": key[0], "method": method, "outcome": c.status})
            if method == "tools/call":
                outcome = quota_outcome(c)
                if outcome is not None:
                    quota[(c.server_slug, outcome)] += 1
        for (server, method, outcome), n in counts.items():
            self.calls.add(n, {"server": server, "method": method, "outcome": outcome})
        for (server, outcome), n in quota.items():
            self.quota.add(n, {"server": server, "outcome": outcome})


def quota_outcome(c: McpCallCompleted) -> str | None:
    """What the quota said about a tools/call: refused (over a limit), unavailable (no decision could
    be made and the policy refuses), allowed; None when the call was refused for another reason
    before any quota decision (no key, bad request)."""
    if c.status == "refused":
        return {QUOTA_REFUSED: "refused", QUOTA_UNAVAILABLE: "unavailable"}.get(c.error_code or 0)
    return "allowed"


_metrics: CallMetrics | None = None


def call_metrics() -> CallMetrics:
    global _metrics
    if _metrics is None:
        _metrics = CallMetrics()
    return _metrics


def state_of(runtime: Runtime) -> LogsState:
    st = runtime.extras.get("logs")
    if st is None:  # consumers start after the start hooks; this is for embeddings without them
        assert isinstance(runtime.settings, Settings)
        st = runtime.extras["logs"] = LogsState(runtime.settings)
    return st


async def on_calls(events: Sequence[Event], session: AsyncSession, runtime: Runtime) -> None:
    st = state_of(runtime)
    calls = completed_calls(events)
    try:
        st.written += await insert_calls(session, st.partitions, calls,
                                         retention_days=st.settings.logs_retention_days)
    except BaseException:
        st.partitions.days.clear()  # a partition created in this transaction is rolled back with it
        raise
    call_metrics().record(calls)


async def on_server_submitted(event: ServerSubmitted, session: AsyncSession) -> None:
    await record_owner(session, event.slug, event.owner_id)


SUBSCRIPTIONS: list[Subscription | BatchSubscription] = [
    # max_batch counts messages: a gateway batch holds up to 1,000 calls
    BatchSubscription((McpCallCompleted, McpCallsCompleted), on_calls, durable=CALLS_DURABLE, max_batch=50,
                      linger=0.2),
    Subscription(ServerSubmitted, on_server_submitted, durable=OWNERS_DURABLE),
]


# -- upkeep ---------------------------------------------------------------------------------------------

async def maintain_once(runtime: Runtime) -> None:
    st = state_of(runtime)
    assert runtime.engine is not None
    async with runtime.engine.begin() as conn:
        created, dropped = await st.partitions.maintain(
            conn, retention_days=st.settings.logs_retention_days, ahead=st.settings.logs_partitions_ahead)
    if created or dropped:
        log.info("call_log_partitions", created=[d.isoformat() for d in created],
                 dropped=[d.isoformat() for d in dropped])


async def _maintain_forever(runtime: Runtime, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await maintain_once(runtime)
        except Exception as exc:
            log.warning("call_log_maintenance_failed", error=str(exc)[:300])


async def start(runtime: Runtime) -> None:
    assert isinstance(runtime.settings, Settings)
    st = runtime.extras["logs"] = LogsState(runtime.settings)
    await maintain_once(runtime)
    st.task = asyncio.get_running_loop().create_task(
        _maintain_forever(runtime, runtime.settings.logs_maintenance_seconds), name="call-log-maintenance")


async def stop(runtime: Runtime) -> None:
    st = runtime.extras.get("logs")
    if st is not None and st.task is not None:
        st.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await st.task
