"""Composition root of the agents service: `wemcp-agents` serves its HTTP API (``/api/v1/agents``,
``/api/v1/model-providers``, the OpenAI-compatible ``/v1/...`` and the agents as MCP servers at
``/mcp/agents/{id}``) and runs its consumers and outbox relay in one process."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import Route

from wemcp.agents.api import openai_router, router
from wemcp.agents.config import Settings, get_settings
from wemcp.agents.deps import KEY
from wemcp.agents.mcp_pool import McpPool
from wemcp.agents.mcp_server import AgentMcpEndpoint
from wemcp.agents.models import bus_tables, probe_receipts
from wemcp.agents.providers import ProviderClient
from wemcp.agents.quota import open_agent_quota
from wemcp.agents.service import AgentsState
from wemcp.common.service import Runtime, ServiceSpec, run_service

MCP_ENDPOINT_KEY = "agents_mcp"


async def _open(runtime: Runtime) -> None:
    settings = runtime.settings
    assert isinstance(settings, Settings) and runtime.sessions is not None and runtime.redis is not None
    provider = ProviderClient(settings)
    runtime.extras["agents_provider"] = provider
    quota = await open_agent_quota(runtime.redis, settings)
    pool = McpPool(settings)
    pool.start()
    runtime.extras[KEY] = AgentsState(settings, runtime.sessions, provider, quota, pool)
    endpoint = AgentMcpEndpoint()
    await endpoint.start()
    runtime.extras[MCP_ENDPOINT_KEY] = endpoint


async def _close(runtime: Runtime) -> None:
    endpoint = runtime.extras.get(MCP_ENDPOINT_KEY)
    if endpoint is not None:
        await endpoint.stop()
    state = runtime.extras.get(KEY)
    if state is not None:
        await state.pool.aclose()
        await state.quota.aclose()
    provider = runtime.extras.get("agents_provider")
    if provider is not None:
        await provider.aclose()


class _McpRoute:
    """Resolves the endpoint from the runtime at request time (the app is built after the hooks)."""

    async def __call__(self, scope, receive, send):
        await scope["app"].state.runtime.extras[MCP_ENDPOINT_KEY](scope, receive, send)


def _configure(app: FastAPI) -> None:
    app.router.routes.append(Route("/mcp/agents/{agent_id}", endpoint=_McpRoute(),
                                   methods=["GET", "POST", "DELETE"], include_in_schema=False))


SPEC = ServiceSpec(name="agents", routers=[router, openai_router], tables=bus_tables, probe_receipts=probe_receipts,
                   uses_redis=True, on_start=[_open], on_stop=[_close], configure_app=_configure)


def run() -> int:
    return run_service(SPEC, get_settings)


if __name__ == "__main__":
    raise SystemExit(run())
