"""Shared helpers of the catalog tests."""

from __future__ import annotations

import uuid
from typing import Any

import nats

from wemcp.common.events.base import Event
from wemcp.common.identity import Identity
from wemcp.common.trust import platform_headers
from wemcp.devstack.testing import wait_for as _wait_for

USER = str(uuid.UUID(int=1))
OTHER = str(uuid.UUID(int=2))
ADMIN = str(uuid.UUID(int=99))


def as_user(uid: str = USER, role: str = "user") -> dict[str, str]:
    """What the gateway sends the catalog for this caller: its signed service assertion."""
    return platform_headers("catalog", Identity(uuid.UUID(uid), role), issuer="gateway")  # type: ignore[arg-type]


def as_platform() -> dict[str, str]:
    """The credential of another platform service (the deployer fetching an archive)."""
    return platform_headers("catalog", issuer="deployer")


def as_admin() -> dict[str, str]:
    return as_user(ADMIN, "admin")


async def publish(nats_url: str, event: Event) -> None:
    """Publish a real event on JetStream, as the deployer would."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.publish(event.subject, event.model_dump_json().encode(),
                         headers={"Nats-Msg-Id": str(event.event_id)})
    finally:
        await nc.close()


async def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.02) -> Any:
    return await _wait_for(predicate, timeout, interval)

def npm_submission(pkg: str = "@acme/weather-mcp", version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {"mcpServers": {"weather": {"command": "npx", "args": ["-y", f"{pkg}@{version}"],
                                       "env": {"WEATHER_API_KEY": "sk-live-secret-123", "UNITS": "metric"}}},
            **extra}
