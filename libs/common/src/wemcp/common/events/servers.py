"""MCP server lifecycle events (stream ``SERVERS``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, Field, field_serializer

from wemcp.common.events.base import Event
from wemcp.common.events.spec import ServerSpec


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


def _generation() -> Any:
    return Field(default=None, ge=1, description=(
        "the deployment's generation: monotonic per server, each new deployment (a submission, an enable) "
        "gets the next. Absent from events of older producers (see the ordering rule)"))


def _seq() -> Any:
    return Field(default=None, ge=1, description=(
        "the step's position in its generation, from 1; the final deployed/deploy_failed has the highest"))


def _decision_seq() -> Any:
    return Field(default=None, ge=1, description=(
        "the server's disable/enable decision counter (catalog), from 1: the highest is the latest decision. "
        "Absent from events of older producers"))


class _DeploymentEvent(_ServerEvent):
    """An event of one deployment of a server, ordered by (``generation``, ``seq``)."""

    terminal: ClassVar[bool] = False

    deployment_id: UUID | None = None
    generation: int | None = _generation()
    seq: int | None = _seq()

    @property
    def position(self) -> tuple[int, int] | None:
        """(generation, seq), None for an event of an older producer."""
        if self.generation is None or self.seq is None:
            return None
        return self.generation, self.seq


class ServerSubmitted(_ServerEvent):
    """A server was submitted (or resubmitted with a new version).

    Emitted by catalog when a submission is stored; consumed by deployer (deploys it) and crawler
    (who owns the slug, for the owner view of the request log)."""

    subject: ClassVar[str] = "server.submitted"

    name: str
    version: str | None = None
    owner_id: UUID | None = None
    spec: ServerSpec = Field(description=(
        "the normalised source spec (a subset of server.json; wemcp.common.events.spec). Its JSON is written "
        "back exactly as it was read"))
    revision: int | None = Field(default=None, ge=1, description=(
        "the server's submission counter (catalog), from 1: the highest is the newest submission. Absent "
        "from events of older producers"))
    approved_by: UUID | None = Field(default=None, description=(
        "the admin who approved it out of the review queue; None when no review was needed (a trusted "
        "publisher, the crawler, an approved package's new version)"))

    @field_serializer("spec")
    def _spec_wire(self, spec: ServerSpec) -> dict[str, Any]:
        return spec.to_wire()


class ServerDeploying(_DeploymentEvent):
    """A deployment step started or finished. Emitted by deployer; consumed by catalog (status)."""

    subject: ClassVar[str] = "server.deploying"

    step: str
    detail: str | None = None
    backend: str = "local"


class ServerDeployed(_DeploymentEvent):
    """A server runs and was introspected.

    Emitted by deployer; consumed by catalog (fills table A's automatic fields, re-embeds table B),
    goods (lists it) and gateway (routes to it)."""

    subject: ClassVar[str] = "server.deployed"
    terminal: ClassVar[bool] = True

    backend: str = "local"
    endpoints: list[Endpoint] = Field(default_factory=list)
    protocol_versions: list[str] = Field(default_factory=list)
    package_version: str | None = None
    tools: list[ToolInfo] = Field(default_factory=list)
    prompts: list[PromptInfo] = Field(default_factory=list)
    resources: list[ResourceInfo] = Field(default_factory=list)


class ServerDeployFailed(_DeploymentEvent):
    """A deployment failed. Emitted by deployer; consumed by catalog (status ``failed``)."""

    subject: ClassVar[str] = "server.deploy_failed"
    terminal: ClassVar[bool] = True

    reason: str
    log_tail: str = Field(default="", description="last lines of the server's output, secrets redacted")


class ServerDisabled(_ServerEvent):
    """An admin (or the owner, by withdrawing) disabled a server.

    Emitted by catalog; consumed by catalog's worker (turns table B off), deployer (scales down),
    goods (delists) and gateway (drops caches, refuses calls)."""

    subject: ClassVar[str] = "server.disabled"

    reason: str | None = None
    actor_id: UUID | None = None
    decision_seq: int | None = _decision_seq()


class ServerUpdated(_ServerEvent):
    """The owner or an admin edited a server's hand-kept fields (title, description, tags, category,
    featured ...) without a new deployment, or its owner changed (``changed: ["owner_id"]``: a name
    claimed by the prover of its namespace, or transferred by an admin).

    Emitted by catalog; consumed by catalog's worker (re-projects table B, re-embedding only when the
    embedded text changed)."""

    subject: ClassVar[str] = "server.updated"

    changed: list[str] = Field(default_factory=list, description="names of the fields that changed")
    actor_id: UUID | None = None
    owner_id: UUID | None = Field(default=None, description=(
        "the owner after the change, when ``owner_id`` is among ``changed`` (absent otherwise)"))


class ServerEnabled(_ServerEvent):
    """A disabled server was enabled again. Emitted by catalog; consumed by the same parties as
    ``server.disabled``, which undo what they did."""

    subject: ClassVar[str] = "server.enabled"

    actor_id: UUID | None = None
    decision_seq: int | None = _decision_seq()


class ServerHealth(_ServerEvent):
    """The result of one health probe of a published hosted or remote server: the crawler connects
    through the gateway as users do (initialize, then tools/list; a probe credential, unmetered and
    outside call counts and request logs). ``status``: ``up``, ``degraded`` (answered, but slowly or
    tools/list failed), ``down`` (no answer, an HTTP or handshake error) or ``idle`` (scaled to zero
    for lack of calls: probed rarely, not woken each interval). The uptime and latency figures are the
    crawler's over its recorded probes; ``tools`` is set only when the tool list changed since the
    previous probe (the server is re-introspected: the catalog takes the new list).

    Emitted by crawler; consumed by catalog (status, last check, uptime, latency on the detail; the
    ``healthy`` search filter; new tools). Order-safe by ``checked_at``."""

    subject: ClassVar[str] = "server.health"

    status: Literal["up", "degraded", "down", "idle"]
    checked_at: datetime
    latency_ms: float | None = None
    error: str | None = None
    uptime_24h: float | None = Field(default=None, ge=0, le=1)
    uptime_7d: float | None = Field(default=None, ge=0, le=1)
    p50_ms: float | None = None
    p95_ms: float | None = None
    tool_count: int | None = None
    tools: list[ToolInfo] | None = None


class ServerRejected(_ServerEvent):
    """An admin rejected a submission waiting in the review queue (``pending_review`` -> ``rejected``);
    nothing was deployed. The submitter sees ``reason`` in the server's detail.

    Emitted by catalog; no consumer acts on it yet (nothing downstream knew of the submission: the
    deployer and gateway only hear of a server from ``server.submitted``, sent on approval)."""

    subject: ClassVar[str] = "server.rejected"

    name: str
    version: str | None = None
    owner_id: UUID | None = None
    reason: str
    actor_id: UUID | None = None
