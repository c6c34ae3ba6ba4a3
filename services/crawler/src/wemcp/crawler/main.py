"""Composition root of the crawler service: `wemcp-crawler` serves its HTTP API and runs its consumers
and outbox relay in one process."""

from __future__ import annotations

from wemcp.common.events.base import ProbeRecorded
from wemcp.common.probes import make_probe_handler, probe_router
from wemcp.common.service import ServiceSpec, run_service
from wemcp.common.service_info import service_info_router
from wemcp.crawler import logs_handlers
from wemcp.crawler.api import router
from wemcp.crawler.config import get_settings
from wemcp.crawler.logs_api import router as logs_router
from wemcp.crawler.models import bus_tables, probe_receipts

SUBSCRIPTIONS = [
    (ProbeRecorded, make_probe_handler(probe_receipts)),
    *logs_handlers.SUBSCRIPTIONS,
]

SPEC = ServiceSpec(
    name="crawler",
    title="WeMcp crawler",
    routers=[router, logs_router, probe_router(bus_tables, probe_receipts)],
    tables=bus_tables,
    subscriptions=SUBSCRIPTIONS,
    uses_redis=False,
    on_start=[logs_handlers.start],
    on_stop=[logs_handlers.stop],
)
SPEC.routers = [*SPEC.routers, service_info_router(SPEC)]


def run() -> int:
    return run_service(SPEC, get_settings)


if __name__ == "__main__":
    raise SystemExit(run())
