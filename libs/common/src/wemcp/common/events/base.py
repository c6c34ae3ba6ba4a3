from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class StreamSpec:
    """One JetStream stream per aggregate."""

    name: str
    subjects: tuple[str, ...]
    description: str
    max_age_days: int = 30


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("SERVERS", ("server.>",), "MCP server lifecycle: submitted, deploying, deployed, disabled ..."),
    StreamSpec("CALLS", ("mcp.call.>",), "Completed MCP calls, for usage, request logs and counters", 7),
    StreamSpec("USERS", ("user.>",), "Account lifecycle"),
    StreamSpec("CRAWLER", ("crawler.>",), "Discovery and health results"),
    StreamSpec("ADMIN", ("admin.>",), "Administrative actions: the audit log's input", 365),
    StreamSpec("GOODS", ("goods.>",), "Products' entitlements to plans, announcements"),
    StreamSpec("AGENTS", ("agent.>",), "Saved agents: created, edited, deleted"),
    # Used only by the platform's own tests and benchmarks of the bus.
    StreamSpec("PROBES", ("probe.>",), "Bus self-tests and benchmarks", 1),
)


class Event(BaseModel):
    """Base of every event. ``event_id`` doubles as the JetStream ``Nats-Msg-Id`` (dedup) and as
    the consumers' idempotency key."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    subject: ClassVar[str]
    stream: ClassVar[str]

    event_id: UUID = Field(default_factory=uuid4)
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    schema_version: int = 1


class ProbeRecorded(Event):
    """Emitted by the bus tests and the outbox benchmark; consumed by the probe consumer that the
    tests start. Carries a sequence number so delivery can be checked exactly."""

    subject: ClassVar[str] = "probe.recorded"
    stream: ClassVar[str] = "PROBES"

    seq: int
    note: str = ""
