"""Composition root of the goods service: `wemcp-goods` serves its HTTP API and runs its consumers
and outbox relay in one process."""

from __future__ import annotations

from wemcp.common.events.base import ProbeRecorded
from wemcp.common.probes import make_probe_handler, probe_router
from wemcp.common.service import ServiceSpec, run_service
from wemcp.common.service_info import service_info_router
from wemcp.goods.api import router
from wemcp.goods.config import get_settings
from wemcp.goods.models import bus_tables, probe_receipts

SUBSCRIPTIONS = [
    (ProbeRecorded, make_probe_handler(probe_receipts)),
]

SPEC = ServiceSpec(
    name="goods",
    title="WeMcp goods",
    routers=[router, probe_router(bus_tables, probe_receipts)],
    tables=bus_tables,
    subscriptions=SUBSCRIPTIONS,
    uses_redis=False,
)
SPEC.routers = [*SPEC.routers, service_info_router(SPEC)]


def run() -> int:
    return run_service(SPEC, get_settings)


if __name__ == "__main__":
    raise SystemExit(run())
