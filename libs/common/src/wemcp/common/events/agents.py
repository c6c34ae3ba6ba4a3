"""Saved agent events (stream ``AGENTS``)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal
from uuid import UUID

from pydantic import Field

from wemcp.common.events.base import Event


class AgentSaved(Event):
    """A saved agent was created, edited or deleted. Carries the agent's listing fields (never its
    instructions or keys). ``saved_at`` orders the events of one agent (the latest wins).

    Emitted by agents; consumed by goods (a public agent is a product: listed while public, delisted
    when made private or deleted)."""

    subject: ClassVar[str] = "agent.saved"
    stream: ClassVar[str] = "AGENTS"

    agent_id: UUID
    owner_id: UUID
    owner_kind: Literal["user", "merchant"] = "user"
    name: str
    description: str = ""
    visibility: Literal["private", "public"] = "private"
    deleted: bool = False
    saved_at: datetime = Field(description="when this state was saved: the latest wins")
