"""Tables of the request log (``crawler`` schema).

``call_logs``: one row per MCP call the gateway completed, never its arguments or results.
Partitioned by day on ``at`` (``call_logs_pYYYYMMDD``, created ahead and dropped past the retention
by :mod:`wemcp.crawler.logs_store`); no primary key (a partitioned table's key would have to include
``at``, and every row is already written once: the batch consumer applies a batch of calls once).
Indexes (on every partition): ``(user_id, at)`` for a caller's own log, ``(server_slug, at)`` and
``(server_slug, status, at)`` for an owner's, ``(at)`` for an admin's.

``logs_server_owners``: who owns which server slug (from ``server.submitted``), for the owner view.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, Float, Integer, Table, Text, func
from sqlalchemy.dialects.postgresql import UUID

from wemcp.crawler.models import Base

call_logs = Table(
    "call_logs", Base.metadata,
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
    "logs_server_owners", Base.metadata,
    Column("slug", Text, primary_key=True),
    Column("owner_id", UUID(as_uuid=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# the columns COPY writes, in order
COPY_COLUMNS: tuple[str, ...] = (
    "at", "event_id", "user_id", "server_slug", "method", "tool", "key_source", "metered", "status",
    "error_code", "latency_ms", "request_bytes", "response_bytes", "in_agent_run")
