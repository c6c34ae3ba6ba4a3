"""Composition root of the goods service: `wemcp-goods` serves its HTTP API (products, plans,
merchant and internal queries, announcements) and runs its consumers (server and agent lifecycle,
accounts' roles, completed calls) and outbox relay in one process."""

from __future__ import annotations

from wemcp.common.bus import BatchSubscription
from wemcp.common.events.agents import AgentSaved
from wemcp.common.events.calls import McpCallCompleted, McpCallsCompleted
from wemcp.common.events.servers import ServerDeployed, ServerDisabled, ServerEnabled, ServerSubmitted, ServerUpdated
from wemcp.common.events.users import UserRegistered, UserRoleChanged
from wemcp.common.service import ServiceSpec, run_service
from wemcp.goods import handlers
from wemcp.goods.api import internal_router, router
from wemcp.goods.config import get_settings
from wemcp.goods.models import bus_tables, probe_receipts

SUBSCRIPTIONS = [
    (ServerSubmitted, handlers.on_server_submitted),
    (ServerDeployed, handlers.on_server_deployed),
    (ServerDisabled, handlers.on_server_disabled),
    (ServerEnabled, handlers.on_server_enabled),
    (ServerUpdated, handlers.on_server_updated),
    (AgentSaved, handlers.on_agent_saved),
    (UserRegistered, handlers.on_user_registered),
    (UserRoleChanged, handlers.on_user_role_changed),
    BatchSubscription((McpCallCompleted, McpCallsCompleted), handlers.on_calls_completed),
]

SPEC = ServiceSpec(name="goods", routers=[router, internal_router],
                   tables=bus_tables, probe_receipts=probe_receipts, subscriptions=SUBSCRIPTIONS)


def run() -> int:
    return run_service(SPEC, get_settings)


if __name__ == "__main__":
    raise SystemExit(run())
