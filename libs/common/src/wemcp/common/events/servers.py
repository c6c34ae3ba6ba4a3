"""MCP server lifecycle events (stream ``SERVERS``)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from wemcp.common.events.base import Event


class ToolInfo(BaseModel):
    name: str
    title: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any] | None = None
    annotations: dict[str, Any] | None = None


class PromptInfo(BaseModel):
    name: str
    title: str | None = None
    description: str | None = None
    arguments: list[dict[str, Any]] = Field(default_factory=list)


class ResourceInfo(BaseModel):
    uri: str
    name: str | None = None
    title: str | None = None
    description: str | None = None
    mime_type: str | None = None


class Endpoint(BaseModel):
    url: str
    transport: Literal["streamable-http", "sse"] = "streamable-http"


class _ServerEvent(Event):
    stream: ClassVar[str] = "SERVERS"

    server_id: UUID
    slug: str


class ServerSubmitted(_ServerEvent):
    """A server was submitted (or resubmitted with a new version).

    Emitted by catalog when a submission is stored; consumed by deployer (deploys it)."""

    subject: ClassVar[str] = "server.submitted"

    name: str
    version: str | None = None
    owner_id: UUID | None = None
    spec: dict[str, Any] = Field(description="the normalised source spec (a subset of server.json)")


class ServerDeploying(_ServerEvent):
    """A deployment step started or finished. Emitted by deployer; consumed by catalog (status)."""

    subject: ClassVar[str] = "server.deploying"

    deployment_id: UUID | None = None
    step: str
    detail: str | None = None
    backend: str = "local"


class ServerDeployed(_ServerEvent):
    """A server runs and was introspected.

    Emitted by deployer; consumed by catalog (fills table A's automatic fields, re-embeds table B),
    goods (lists it) and gateway (routes to it)."""

    subject: ClassVar[str] = "server.deployed"

    deployment_id: UUID | None = None
    backend: str = "local"
    endpoints: list[Endpoint] = Field(default_factory=list)
    protocol_versions: list[str] = Field(default_factory=list)
    package_version: str | None = None
    tools: list[ToolInfo] = Field(default_factory=list)
    prompts: list[PromptInfo] = Field(default_factory=list)
    resources: list[ResourceInfo] = Field(default_factory=list)


class ServerDeployFailed(_ServerEvent):
    """A deployment failed. Emitted by deployer; consumed by catalog (status ``failed``)."""

    subject: ClassVar[str] = "server.deploy_failed"

    deployment_id: UUID | None = None
    reason: str
    log_tail: str = Field(default="", description="last lines of the server's output, secrets redacted")


class ServerDisabled(_ServerEvent):
    """An admin (or the owner, by withdrawing) disabled a server.

    Emitted by catalog; consumed by catalog's worker (turns table B off), deployer (scales down),
    goods (delists) and gateway (drops caches, refuses calls)."""

    subject: ClassVar[str] = "server.disabled"

    reason: str | None = None
    actor_id: UUID | None = None


class ServerUpdated(_ServerEvent):
    """The owner or an admin edited a server's hand-kept fields (title, description, tags, category,
    featured ...) without a new deployment.

    Emitted by catalog; consumed by catalog's worker (re-projects table B, re-embedding only when the
    embedded text changed)."""

    subject: ClassVar[str] = "server.updated"

    changed: list[str] = Field(default_factory=list, description="names of the fields that changed")
    actor_id: UUID | None = None


class ServerEnabled(_ServerEvent):
    """A disabled server was enabled again. Emitted by catalog; consumed by the same parties as
    ``server.disabled``, which undo what they did."""

    subject: ClassVar[str] = "server.enabled"

    actor_id: UUID | None = None
