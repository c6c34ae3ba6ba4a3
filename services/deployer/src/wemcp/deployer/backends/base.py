"""The backend interface every deployment target implements."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from wemcp.deployer.spec import DeploySpec

Progress = Callable[[str, str | None], Awaitable[None]]


@dataclass(frozen=True)
class Target:
    slug: str
    server_id: uuid.UUID
    spec: DeploySpec
    generation: int = 1


@dataclass
class Plan:
    """What ``deploy`` would do, computed without side effects (no network, no files)."""

    backend: str
    slug: str
    kind: str
    actions: list[str]
    artifacts: dict[str, Any] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Outcome:
    endpoint: str
    transport: str = "streamable-http"
    package_version: str | None = None
    # a URL the deployer itself can introspect (loopback for local; same as endpoint for remotes)
    introspect_url: str | None = None
    introspect_headers: dict[str, str] = field(default_factory=dict)
    modern_via_bridge: bool = False
    handshake_version: str | None = None


@dataclass
class RuntimeStatus:
    state: str  # running | idle | stopped | unknown
    replicas: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


class DeployError(Exception):
    """A deployment failed for a reason the submitter can act on."""

    def __init__(self, reason: str, tail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.tail = tail


class Deployer(Protocol):
    name: str

    def plan(self, target: Target) -> Plan: ...

    async def deploy(self, target: Target, progress: Progress) -> Outcome:
        """Idempotent: deploying the same target twice leaves one running deployment."""
        ...

    async def status(self, slug: str) -> RuntimeStatus: ...

    async def logs(self, slug: str, lines: int = 100) -> str:
        """Recent output, secrets redacted."""
        ...

    async def scale(self, slug: str, replicas: int) -> None: ...

    async def undeploy(self, slug: str) -> None: ...
