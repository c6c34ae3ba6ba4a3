"""The gateway's process state as FastAPI dependencies, for its FastAPI route modules (api.py,
console.py, rest.py): handlers declare ``gw: State``, ``mcp: McpParts``, ``settings: GatewaySettings``
or ``runtime: RuntimeOf`` instead of reaching ``request.app.state``.

The MCP transports (``/mcp/...``: streamable.py, legacy_sse.py, bundles.py behind wiring.py's raw ASGI
endpoints) are not FastAPI routes and solve no dependencies: they stay off this module, so the hot
path pays nothing for it. The dependencies are coroutines (FastAPI runs a plain ``def`` dependency in
a worker thread)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx2 as httpx
from fastapi import Depends, Request

from wemcp.common.deps import RuntimeOf
from wemcp.common.identity import Identity
from wemcp.gateway.config import Settings
from wemcp.gateway.wiring import Mcp

__all__ = ["GatewaySettings", "GatewayState", "McpParts", "RuntimeOf", "State"]


@dataclass
class GatewayState:
    """What one gateway process holds for its lifetime (built by ``main._open``;
    ``runtime.extras["gateway"]``)."""

    settings: Settings
    client: httpx.AsyncClient
    urls: dict[str, str]
    openapi_cache: tuple[float, dict[str, Any]] | None = field(default=None)
    # Set by the auth integration: verifies a request's JWT or API key; None = anonymous.
    verifier: Callable[[Request], Awaitable[Identity | None]] | None = None


async def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.runtime.extras["gateway"]
    return state


async def _mcp(request: Request) -> Mcp:
    mcp: Mcp = request.app.state.runtime.extras["mcp"]
    return mcp


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.runtime.settings
    return settings


State = Annotated[GatewayState, Depends(_state)]
McpParts = Annotated[Mcp, Depends(_mcp)]
GatewaySettings = Annotated[Settings, Depends(_settings)]
