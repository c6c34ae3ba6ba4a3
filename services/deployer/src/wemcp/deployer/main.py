"""Composition root of the deployer service: `wemcp-deployer` serves its HTTP API, runs its consumers,
its deployment worker and the local backend's bridge, and relays its outbox, in one process."""

from __future__ import annotations

from typing import cast

from wemcp.common.events.servers import ServerDisabled, ServerEnabled, ServerSubmitted
from wemcp.common.service import Runtime, ServiceSpec, run_service
from wemcp.deployer.api import router
from wemcp.deployer.config import Settings, get_settings
from wemcp.deployer.deps import KEY
from wemcp.deployer.handlers import on_server_disabled, on_server_enabled, on_server_submitted
from wemcp.deployer.models import bus_tables, probe_receipts
from wemcp.deployer.service import Orchestrator

SUBSCRIPTIONS = [
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


SPEC = ServiceSpec(name="deployer", routers=[router], tables=bus_tables, probe_receipts=probe_receipts,
                   subscriptions=SUBSCRIPTIONS, on_start=[start_worker], on_stop=[stop_worker])


def run() -> int:
    # uvloop: the bridge in this process is on every hosted call's path, and its sockets and the
    # children's pipes cost less CPU on it (bench/gateway_compare.py).
    return run_service(SPEC, get_settings, uvloop=True)


if __name__ == "__main__":
    raise SystemExit(run())
