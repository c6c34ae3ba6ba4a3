"""Tables of the ratelimit service, all in the ``ratelimit`` schema.

Counters live in Redis (the hot path); Postgres holds what must survive losing Redis: the policies
and the daily usage rows built from ``mcp.call.completed``.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, CheckConstraint, Date, DateTime, Index, Integer, String
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from wemcp.common.db import service_bus_tables, service_metadata, timestamp_now


class Base(DeclarativeBase):
    metadata = service_metadata("ratelimit")


bus_tables, probe_receipts = service_bus_tables(Base.metadata)

DEFAULT_SUBJECT = "*"
FREE_PLAN = ""


class QuotaPolicy(Base):
    """A default (``subject_id = '*'``) or an override for one server or agent.

    ``plan`` is '' for the free tier; plans bought through goods will add rows with their plan id
    (resolution then: subject+plan > default+plan > subject > default). A NULL limit inherits."""

    __tablename__ = "quota_policies"
    __table_args__ = (
        CheckConstraint("subject_kind IN ('server', 'agent')", name="kind"),
        CheckConstraint("per_user_daily IS NULL OR per_user_daily >= 0", name="per_user_daily"),
        CheckConstraint("global_daily_cap IS NULL OR global_daily_cap >= 0", name="global_daily_cap"),
    )

    subject_kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    plan: Mapped[str] = mapped_column(String(64), primary_key=True, default=FREE_PLAN)
    per_user_daily: Mapped[int | None] = mapped_column(Integer)
    global_daily_cap: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(String(500), default="")
    updated_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    updated_at: Mapped[datetime] = timestamp_now(onupdate=True)


class DailyUsage(Base):
    """Calls per (local day, user, subject), from ``mcp.call.completed``.

    ``metered``: calls that consumed system-key quota. ``own_key`` and ``in_agent_run``: unmetered
    calls. ``refused``: calls the quota (or anything else) refused."""

    __tablename__ = "daily_usage"
    __table_args__ = (Index("ix_daily_usage_user_day", "user_id", "day"),)

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    subject_kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    metered: Mapped[int] = mapped_column(BigInteger, default=0)
    own_key: Mapped[int] = mapped_column(BigInteger, default=0)
    in_agent_run: Mapped[int] = mapped_column(BigInteger, default=0)
    refused: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms_sum: Mapped[float] = mapped_column(default=0.0)
    updated_at: Mapped[datetime] = timestamp_now(onupdate=True)


class UserEntitlement(Base):
    """A user's plan for one server or agent, as goods last said (``goods.entitlement_changed``): the
    row with the highest ``version`` per (user, subject) wins. Active, unexpired rows override the
    subject's per-user daily limit for that user."""

    __tablename__ = "entitlements"
    __table_args__ = (CheckConstraint("subject_kind IN ('server', 'agent')", name="kind"),)

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    subject_kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    entitlement_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    plan_code: Mapped[str] = mapped_column(String(64), default="")
    per_user_daily: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    active: Mapped[bool] = mapped_column()
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = timestamp_now(onupdate=True)
