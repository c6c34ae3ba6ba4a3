"""request logs: call_logs partitioned by day, logs_server_owners

Revision ID: crawler_0010_call_logs
Revises: crawler_0003_probes
Create Date: 2026-12-02

``call_logs`` starts empty (the gateway never stored calls before; the CALLS stream's last 7 days are
read by the new durable consumer, which starts at the stream's beginning). The partitions of today
and the next days are created here; the service keeps them ahead from then on.

Backfill of ``logs_server_owners``: from ``catalog.servers`` when that table is in the same database
(as in every WeMcp deployment); servers submitted later arrive as ``server.submitted``.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from alembic import op

revision: str = "crawler_0010_call_logs"
down_revision: str | None = "crawler_0003_probes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "crawler"


def upgrade() -> None:
    op.execute(f"""
        CREATE TABLE {S}.call_logs (
            at timestamptz NOT NULL,
            event_id uuid NOT NULL,
            user_id uuid,
            server_slug text NOT NULL,
            method text NOT NULL,
            tool text,
            key_source text NOT NULL,
            metered boolean NOT NULL,
            status text NOT NULL,
            error_code integer,
            latency_ms double precision NOT NULL,
            request_bytes integer NOT NULL,
            response_bytes integer NOT NULL,
            in_agent_run boolean NOT NULL
        ) PARTITION BY RANGE (at)""")
    op.execute(f"CREATE INDEX ix_call_logs_user_at ON {S}.call_logs (user_id, at DESC)")
    op.execute(f"CREATE INDEX ix_call_logs_server_at ON {S}.call_logs (server_slug, at DESC)")
    op.execute(f"CREATE INDEX ix_call_logs_server_status_at ON {S}.call_logs (server_slug, status, at DESC)")
    op.execute(f"CREATE INDEX ix_call_logs_at ON {S}.call_logs (at DESC)")
    today = datetime.now(UTC).date()
    for n in range(-1, 3):
        day = today + timedelta(days=n)
        nxt = day + timedelta(days=1)
        op.execute(f"CREATE TABLE IF NOT EXISTS {S}.call_logs_p{day:%Y%m%d} PARTITION OF {S}.call_logs "
                   f"FOR VALUES FROM ('{day.isoformat()} 00:00+00') TO ('{nxt.isoformat()} 00:00+00')")
    op.execute(f"""
        CREATE TABLE {S}.logs_server_owners (
            slug text PRIMARY KEY,
            owner_id uuid,
            updated_at timestamptz NOT NULL DEFAULT now()
        )""")
    op.execute("""
        DO $$ BEGIN
            IF to_regclass('catalog.servers') IS NOT NULL THEN
                INSERT INTO crawler.logs_server_owners (slug, owner_id)
                SELECT slug, owner_id FROM catalog.servers ON CONFLICT (slug) DO NOTHING;
            END IF;
        END $$""")


def downgrade() -> None:
    op.execute(f"DROP TABLE {S}.logs_server_owners")
    op.execute(f"DROP TABLE {S}.call_logs")  # and every partition
