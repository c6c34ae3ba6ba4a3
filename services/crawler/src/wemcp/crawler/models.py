"""Tables of the crawler service, all in the ``crawler`` schema.

- ``crawl_runs``: one row per crawl of one source (started, finished, found, new, updated, errors);
  what ``GET /api/v1/admin/crawls`` reads.
- ``crawl_state``: per source, where the run in progress stands (its cursor, committed with every
  page, so a crawl that died resumes there), the lease of the process running it, and the
  watermark of the last complete run (the next run asks only for what changed since).
- ``discovered``: one row per package key ever found: which source claimed it and a fingerprint of
  what was emitted, so an unchanged package is never emitted twice.
- ``probe_targets``, ``probe_results``: the health probes' targets and results.
- ``call_logs``: the request log, one row per MCP call the gateway completed, never its arguments or
  results. Partitioned by day on ``at`` (``call_logs_pYYYYMMDD``, created ahead and dropped past the
  retention by :mod:`wemcp.crawler.logs_store`); no primary key (a partitioned table's key would have
  to include ``at``, and every row is already written once: the batch consumer applies a batch of
  calls once). Indexes (on every partition): ``(user_id, at)`` for a caller's own log,
  ``(server_slug, at)`` and ``(server_slug, status, at)`` for an owner's, ``(at)`` for an admin's.
- ``logs_server_owners``: who owns which server slug (from ``server.submitted``), for the request
  log's owner view.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Float, Index, Integer, String, Table, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from wemcp.common.db import service_bus_tables, service_metadata, timestamp_now, uuid_pk


class Base(DeclarativeBase):
    metadata = service_metadata("crawler")


bus_tables, probe_receipts = service_bus_tables(Base.metadata)


class CrawlRun(Base):
    __tablename__ = "crawl_runs"
    __table_args__ = (
        Index("ix_crawl_runs_started", "started_at"),
        Index("ix_crawl_runs_source_started", "source", "started_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    source: Mapped[str] = mapped_column(String(20))  # registry | npm | pypi
    trigger: Mapped[str] = mapped_column(String(20))  # schedule | admin
    status: Mapped[str] = mapped_column(String(20), default="running")  # running|finished|failed|interrupted
    started_at: Mapped[datetime] = timestamp_now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    found: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    new: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    updated: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    errors: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    pages: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    requests: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # the first error messages (at most 20), for the admin reading the run
    error_detail: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default=text("'[]'"))
    resumed_from: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # updated_since asked (registry)


class CrawlState(Base):
    __tablename__ = "crawl_state"

    source: Mapped[str] = mapped_column(String(20), primary_key=True)
    run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))  # the run in progress
    cursor: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # where it stands (committed per page)
    since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # that run's updated_since
    watermark: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # last complete run's
    lease_owner: Mapped[str | None] = mapped_column(String(80))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Discovered(Base):
    __tablename__ = "discovered"
    __table_args__ = (Index("ix_discovered_source", "source"),)

    package_key: Mapped[str] = mapped_column(String(400), primary_key=True)
    source: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str | None] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    # PyPI packages a registry entry names (looked up by the pypi source)
    pypi_name: Mapped[str | None] = mapped_column(Text)
    first_seen: Mapped[datetime] = timestamp_now()
    last_seen: Mapped[datetime] = timestamp_now()
    emitted: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))


class ProbeTarget(Base):
    """A published hosted or remote server the crawler probes (folded from ``server.deployed``,
    ``server.disabled``/``server.enabled``; its last call from the call events)."""

    __tablename__ = "probe_targets"
    __table_args__ = (Index("ix_probe_targets_due", "enabled", "next_probe_at"),)

    slug: Mapped[str] = mapped_column(String(80), primary_key=True)
    server_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    kind: Mapped[str] = mapped_column(String(20))  # hosted (scales to zero) | remote (never idle)
    backend: Mapped[str] = mapped_column(String(40))
    enabled: Mapped[bool] = mapped_column(default=True, server_default=text("true"))
    deployed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the event's occurred_at
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # last disable/enable applied
    last_call_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_probe_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_probe_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str | None] = mapped_column(String(20))  # the last status reported
    probed_status: Mapped[str | None] = mapped_column(String(20))  # the last real probe's
    tools_hash: Mapped[str | None] = mapped_column(String(64))
    last_reported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ProbeResult(Base):
    """One real probe (idle servers not probed are not recorded): uptime and latency are computed
    from these; rows older than ``probe_retention_days`` are pruned."""

    __tablename__ = "probe_results"
    __table_args__ = (Index("ix_probe_results_slug_at", "slug", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(80))
    at: Mapped[datetime] = timestamp_now()
    status: Mapped[str] = mapped_column(String(20))  # up | degraded | down
    latency_ms: Mapped[float | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)


# -- the request log ------------------------------------------------------------------------------------

call_logs = Table(
    "call_logs",
    Base.metadata,
    Column("at", DateTime(timezone=True), nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("user_id", UUID(as_uuid=True)),
    Column("server_slug", Text, nullable=False),
    Column("method", Text, nullable=False),
    Column("tool", Text),
    Column("key_source", Text, nullable=False),
    Column("metered", Boolean, nullable=False),
    Column("status", Text, nullable=False),
    Column("error_code", Integer),
    Column("latency_ms", Float, nullable=False),
    Column("request_bytes", Integer, nullable=False),
    Column("response_bytes", Integer, nullable=False),
    Column("in_agent_run", Boolean, nullable=False),
    postgresql_partition_by="RANGE (at)",
)

server_owners = Table(
    "logs_server_owners",
    Base.metadata,
    Column("slug", Text, primary_key=True),
    Column("owner_id", UUID(as_uuid=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# the columns COPY writes into call_logs, in order
# fmt: off
COPY_COLUMNS: tuple[str, ...] = (
    "at", "event_id", "user_id", "server_slug", "method", "tool", "key_source", "metered", "status",
    "error_code", "latency_ms", "request_bytes", "response_bytes", "in_agent_run"
)
# fmt: on
