"""Composition root of the crawler service: `wemcp-crawler` serves its HTTP API and runs its consumers,
outbox relay and (when switched on) its crawl schedule in one process."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from wemcp.common.bus import BatchSubscription
from wemcp.common.events.calls import McpCallCompleted, McpCallsCompleted
from wemcp.common.events.servers import ServerDeployed, ServerDisabled, ServerEnabled
from wemcp.common.service import Runtime, ServiceSpec, run_service
from wemcp.crawler import logs_handlers
from wemcp.crawler.api import router
from wemcp.crawler.config import Settings, get_settings
from wemcp.crawler.logs_api import router as logs_router
from wemcp.crawler.models import bus_tables, probe_receipts
from wemcp.crawler.probes import on_calls, on_server_deployed, on_server_disabled, on_server_enabled

SUBSCRIPTIONS: list[Any] = [
    # health probe targets (probes.py)
    (ServerDeployed, on_server_deployed),
    (ServerDisabled, on_server_disabled),
    (ServerEnabled, on_server_enabled),
    # the last call per server (idle detection); its own durable, apart from the request logs'
    BatchSubscription((McpCallCompleted, McpCallsCompleted), on_calls, durable="crawler-probe-activity"),
    *logs_handlers.SUBSCRIPTIONS,
]


async def start_schedules(runtime: Runtime) -> None:
    from wemcp.crawler.crawl import schedule_loop
    from wemcp.crawler.probes import probe_loop

    settings: Settings = runtime.settings
    tasks = runtime.extras.setdefault("background", [])
    if settings.crawl_schedule:
        tasks.append(asyncio.create_task(schedule_loop(runtime), name="crawl-schedule"))
    if settings.probe_schedule:
        tasks.append(asyncio.create_task(probe_loop(runtime), name="probe-schedule"))


async def stop_schedules(runtime: Runtime) -> None:
    tasks = [*runtime.extras.get("background", []), *runtime.extras.get("crawl_tasks", set())]
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(BaseException):
            await t


SPEC = ServiceSpec(name="crawler", routers=[router, logs_router],
                   tables=bus_tables, probe_receipts=probe_receipts, subscriptions=SUBSCRIPTIONS,
                   on_start=[start_schedules, logs_handlers.start], on_stop=[logs_handlers.stop, stop_schedules])


def run() -> int:
    return run_service(SPEC, get_settings)


if __name__ == "__main__":
    raise SystemExit(run())
