"""Composition root of the gateway (``wemcp-gateway``)."""

from __future__ import annotations

from wemcp.common.service import Runtime, ServiceSpec, run_service
from wemcp.gateway.api import router
from wemcp.gateway.config import Settings, get_settings
from wemcp.gateway.console import router as console_router
from wemcp.gateway.deps import GatewayState
from wemcp.gateway.identity import Verifier
from wemcp.gateway.proxy import make_client
from wemcp.gateway.replicas import close_replicas, open_replicas
from wemcp.gateway.rest import router as mcp_rest_router
from wemcp.gateway.wiring import close_mcp, install_mcp_routes, open_mcp


async def _open(runtime: Runtime) -> None:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    client = make_client(settings.upstream_max_connections, settings.upstream_timeout_seconds,
                         settings.upstream_connect_timeout_seconds)
    state = GatewayState(settings, client, settings.service_urls())
    verifier = Verifier(client, state.urls["auth"], issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                        signer=runtime.issuer,
                        jwks_refresh_seconds=settings.jwks_refresh_seconds,
                        jwks_min_refetch_seconds=settings.jwks_min_refetch_seconds,
                        api_key_ttl_seconds=settings.api_key_cache_ttl_seconds)
    if runtime.broker is not None:
        await verifier.subscribe(runtime.broker.connection)
    await verifier.refresh_jwks()  # warm; a failure here is retried on the first token
    state.verifier = verifier
    runtime.extras["gateway"] = state


async def _close(runtime: Runtime) -> None:
    state = runtime.extras.get("gateway")
    if state is not None:
        if isinstance(state.verifier, Verifier):
            await state.verifier.close()
        await state.client.aclose()


SPEC = ServiceSpec(
    name="gateway",
    routers=[mcp_rest_router, router, console_router],
    uses_database=False,
    uses_redis=True,
    on_start=[_open, open_mcp, open_replicas],
    on_stop=[close_replicas, close_mcp, _close],
    configure_app=install_mcp_routes,
    default_health=False,
    openapi_url=None,
    edge=True,
    service_info=False,
)


def run() -> int:
    # uvloop: the gateway is the one process on every call's path, and the default loop's Python-level
    # socket writes and scheduling were a large share of its per-call CPU (bench/gateway_compare.py).
    return run_service(SPEC, get_settings, uvloop=True)


if __name__ == "__main__":
    raise SystemExit(run())
