"""Tables of the deployer service, all in the ``deployer`` schema."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Identity, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from wemcp.common.db import service_bus_tables, service_metadata, timestamp_now, uuid_pk


class Base(DeclarativeBase):
    metadata = service_metadata("deployer")


bus_tables, probe_receipts = service_bus_tables(Base.metadata)

class Deployment(Base):
    """One row per server (by slug): the desired state, the last attempt and its outcome."""

    __tablename__ = "deployments"

    id: Mapped[uuid.UUID] = uuid_pk()
    server_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    slug: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(300), nullable=False, default="")
    owner_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    backend: Mapped[str] = mapped_column(String(40), nullable=False, default="local")
    # queued | deploying | deployed | failed | stopping | disabled
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="queued")
    desired: Mapped[str] = mapped_column(String(20), nullable=False, default="running")  # running | stopped
    generation: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    # the last step sequence used in this generation (its events carry (generation, seq)); 0 on a new one
    seq: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    # the newest disable/enable decision applied (the events' decision_seq; decision_at for older events)
    decision_seq: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))
    decision_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default=text("0"))  # submission
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False, default=list)
    endpoint: Mapped[str | None] = mapped_column(Text)
    transport: Mapped[str | None] = mapped_column(String(40))
    protocol_versions: Mapped[list[str]] = mapped_column(JSONB, nullable=False, default=list)
    package_version: Mapped[str | None] = mapped_column(String(100))
    introspection: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    reason: Mapped[str | None] = mapped_column(Text)
    log_tail: Mapped[str] = mapped_column(Text, nullable=False, default="")
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = timestamp_now()
    updated_at: Mapped[datetime] = timestamp_now(onupdate=True)
    deployed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_deployments_work", "updated_at",
              postgresql_where=text("status IN ('queued', 'deploying', 'stopping')")),
        {"comment": "deployments of submitted servers"},
    )



class DeploymentLog(Base):
    """One log line of one deployment attempt (``generation``): the installer's output and the
    server's start-up output, redacted when written. Bounded per attempt (``service.MAX_LOG_LINES``);
    attempts older than the previous one are deleted when a new one starts."""

    __tablename__ = "deployment_logs"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("deployer.deployments.id", ondelete="CASCADE"), nullable=False)
    generation: Mapped[int] = mapped_column(Integer, nullable=False)
    source: Mapped[str] = mapped_column(String(20), nullable=False)  # install | server
    line: Mapped[str] = mapped_column(Text, nullable=False)
    at: Mapped[datetime] = timestamp_now()

    __table_args__ = (
        Index("ix_deployment_logs_attempt", "deployment_id", "generation", "id"),
        {"comment": "log lines of deployment attempts (redacted), streamed to owners and admins"},
    )
