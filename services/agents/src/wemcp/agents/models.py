"""Tables of the agents service, all in the ``agents`` schema."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, String, Text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from wemcp.common.db import service_bus_tables, service_metadata, timestamp_now, uuid_pk


class Base(DeclarativeBase):
    metadata = service_metadata("agents")

bus_tables, probe_receipts = service_bus_tables(Base.metadata)


def provider_key_context(provider_id: uuid.UUID) -> str:
    """The associated data of a provider's sealed key: it opens in that provider's row only."""
    return f"provider-key:{provider_id}"


class ModelProvider(Base):
    """An OpenAI-compatible endpoint registered by an admin. The API key is stored sealed
    (``wemcp.common.sealing``, context :func:`provider_key_context`) and never returned."""

    __tablename__ = "model_providers"

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(64), unique=True)
    base_url: Mapped[str] = mapped_column(String(500))
    api_key_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)  # v1.<kek id>.<dek>.<ct>
    models: Mapped[list[str]] = mapped_column(JSONB, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    created_at: Mapped[datetime] = timestamp_now()
    updated_at: Mapped[datetime] = timestamp_now(onupdate=True)


class Agent(Base):
    """A saved agent: model, instructions, MCP servers and their tool allow-lists."""

    __tablename__ = "agents"

    id: Mapped[uuid.UUID] = uuid_pk()
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    owner_kind: Mapped[str] = mapped_column(String(16), default="user")  # user | merchant
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str] = mapped_column(String(200))
    instructions: Mapped[str] = mapped_column(Text, default="")
    # [{"ref": slug, "allowed_tools": [...] | null} | {"server_url": url, "server_label": ..., ...}]
    mcp_servers: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    visibility: Mapped[str] = mapped_column(String(16), default="private")  # private | public
    max_tool_rounds: Mapped[int | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = timestamp_now()
    updated_at: Mapped[datetime] = timestamp_now(onupdate=True)
