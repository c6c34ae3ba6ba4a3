"""Completed MCP calls (stream ``CALLS``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Literal
from uuid import UUID

from wemcp.common.events.base import Event


class McpCallCompleted(Event):
    """One MCP request finished at the gateway. Never carries argument values.

    Emitted by gateway, off the hot path; consumed by ratelimit (daily usage), crawler (request
    logs) and catalog (call counters)."""

    subject: ClassVar[str] = "mcp.call.completed"
    stream: ClassVar[str] = "CALLS"

    user_id: UUID | None = None
    server_slug: str
    agent_id: UUID | None = None
    method: str
    tool: str | None = None
    key_source: Literal["request", "vault", "oauth", "system", "none"] = "none"
    metered: bool = True
    in_agent_run: bool = False
    status: Literal["ok", "error", "refused", "timeout"] = "ok"
    error_code: int | None = None
    latency_ms: float
    request_bytes: int = 0
    response_bytes: int = 0


class McpCallsCompleted(Event):
    """A batch of completed MCP calls, as the gateway publishes them: one JetStream message for every
    call that finished within one publishing interval (the events inside are the same
    ``mcp.call.completed`` records, each with its own ``event_id``). The batch's own ``event_id`` is
    its ``Nats-Msg-Id`` and the consumers' idempotency key: a batch is applied whole or not at all,
    and a batch replayed from the gateway's spool is byte-for-byte the one first tried, so a call is
    never counted twice.

    Emitted by gateway; consumed by ratelimit (daily usage), catalog (call counters) and crawler
    (request logs and the call metrics). Consumers also accept single ``mcp.call.completed`` messages (what
    gateways before batching published)."""

    subject: ClassVar[str] = "mcp.call.batch"
    stream: ClassVar[str] = "CALLS"

    gateway: str = ""
    calls: list[McpCallCompleted]


def completed_calls(events: Iterable[Event]) -> list[McpCallCompleted]:
    """The calls in what a batch consumer received: batches unpacked, single events as they are,
    in stream order."""
    out: list[McpCallCompleted] = []
    for e in events:
        if isinstance(e, McpCallsCompleted):
            out.extend(e.calls)
        elif isinstance(e, McpCallCompleted):
            out.append(e)
    return out
