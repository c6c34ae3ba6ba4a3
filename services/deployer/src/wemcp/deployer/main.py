"""Composition root of the deployer service: `wemcp-deployer` serves its HTTP API, runs its consumers,
its deployment worker and the local backend's bridge, and relays its outbox, in one process."""

from __future__ import annotations

import asyncio
from typing import cast

from wemcp.common.events.base import ProbeRecorded
from wemcp.common.events.servers import ServerDisabled, ServerEnabled, ServerSubmitted
from wemcp.common.probes import make_probe_handler, probe_router
from wemcp.common.service import Runtime, ServiceSpec, run_service
from wemcp.common.service_info import service_info_router
from wemcp.deployer.api import router
from wemcp.deployer.config import Settings, get_settings
from wemcp.deployer.deps import KEY
from wemcp.deployer.handlers import on_server_disabled, on_server_enabled, on_server_submitted
from wemcp.deployer.models import bus_tables, probe_receipts
from wemcp.deployer.service import Orchestrator

SUBSCRIPTIONS = [
    (ProbeRecorded, make_probe_handler(probe_receipts)),
    (ServerSubmitted, on_server_submitted),
    (ServerDisabled, on_server_disabled),
    (ServerEnabled, on_server_enabled),
]


async def start_worker(runtime: Runtime) -> None:
    assert runtime.sessions is not None
    settings = runtime.settings if isinstance(runtime.settings, Settings) else Settings(
        **runtime.settings.model_dump())
    orch = Orchestrator(runtime.sessions, cast(Settings, settings))
    await orch.start()
    runtime.extras[KEY] = orch


async def stop_worker(runtime: Runtime) -> None:
    orch = runtime.extras.pop(KEY, None)
    if orch is not None:
        await orch.stop()


SPEC = ServiceSpec(
    name="deployer",
    title="WeMcp deployer",
    routers=[router, probe_router(bus_tables, probe_receipts)],
    tables=bus_tables,
    subscriptions=SUBSCRIPTIONS,
    uses_redis=False,
    on_start=[start_worker],
    on_stop=[stop_worker],
)
SPEC.routers = [*SPEC.routers, service_info_router(SPEC)]


def run() -> int:
    # uvloop where available (uvicorn[standard] installs it): the bridge in this process is on every
    # hosted call's path, and its sockets and the children's pipes cost less CPU on it
    # (bench/gateway_compare.py).
    try:
        import uvloop
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return run_service(SPEC, get_settings)


if __name__ == "__main__":
    raise SystemExit(run())
