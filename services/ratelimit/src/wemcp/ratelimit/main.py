"""Composition root of the ratelimit service: `wemcp-ratelimit` serves its HTTP API, consumes
``mcp.call.completed`` into daily usage, publishes the policy snapshot every quota client
(``wemcp.quota``) reads, and relays its outbox — in one process."""

from __future__ import annotations

import asyncio

from wemcp.common.bus import BatchSubscription
from wemcp.common.events.calls import McpCallCompleted, McpCallsCompleted
from wemcp.common.events.goods import EntitlementChanged
from wemcp.common.logging import get_logger
from wemcp.common.service import Runtime, ServiceSpec, cancel_task, run_service
from wemcp.quota.client import open_quota_client
from wemcp.quota.policy import SNAPSHOT_KEY
from wemcp.ratelimit import handlers
from wemcp.ratelimit.api import router
from wemcp.ratelimit.config import Settings, get_settings
from wemcp.ratelimit.deps import KEY, RatelimitState
from wemcp.ratelimit.models import bus_tables, probe_receipts
from wemcp.ratelimit.service import publish_policies

log = get_logger("wemcp.ratelimit")

SUBSCRIPTIONS = [
    # durable "ratelimit-mcp-call-completed", as when it took single events (its processed_events rows hold)
    BatchSubscription((McpCallCompleted, McpCallsCompleted), handlers.on_calls_completed),
    # a user's plan granted through goods: their own daily limit (applied once, highest version wins)
    (EntitlementChanged, handlers.on_entitlement_changed),
]


async def _start(rt: Runtime) -> None:
    settings = rt.settings
    assert isinstance(settings, Settings) and rt.redis is not None and rt.sessions is not None
    handlers.configure(settings.day_zone)
    await publish_policies(rt.sessions, rt.redis, settings)
    quota = await open_quota_client(rt.redis, settings)
    rt.extras.update(policy_cache=quota.policies, quota=quota)
    rt.extras[KEY] = RatelimitState(settings, rt.sessions, rt.redis)
    rt.extras["snapshot_keeper"] = asyncio.get_running_loop().create_task(_keep_snapshot(rt, settings))


async def _keep_snapshot(rt: Runtime, settings: Settings) -> None:
    """Redis may be flushed or replaced: put the snapshot back when it is missing."""
    assert rt.redis is not None and rt.sessions is not None
    while True:
        await asyncio.sleep(settings.policy_max_age_seconds / 2)
        try:
            if not await rt.redis.exists(SNAPSHOT_KEY):
                await publish_policies(rt.sessions, rt.redis, settings)
                log.warning("policy_snapshot_restored")
        except Exception as exc:
            log.warning("policy_snapshot_check_failed", error=str(exc)[:200])


async def _stop(rt: Runtime) -> None:
    await cancel_task(rt.extras.pop("snapshot_keeper", None))
    rt.extras.pop(KEY, None)
    rt.extras.pop("policy_cache", None)
    quota = rt.extras.pop("quota", None)
    if quota is not None:
        await quota.aclose()


SPEC = ServiceSpec(name="ratelimit", routers=[router], tables=bus_tables, probe_receipts=probe_receipts,
                   subscriptions=SUBSCRIPTIONS, uses_redis=True, on_start=[_start], on_stop=[_stop])


def run() -> int:
    return run_service(SPEC, get_settings)


if __name__ == "__main__":
    raise SystemExit(run())
