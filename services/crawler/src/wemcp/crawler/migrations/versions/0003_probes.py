"""health probes: probe targets and probe results

Revision ID: crawler_0003_probes
Revises: crawler_0002_crawls
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "crawler_0003_probes"
down_revision: str | None = "crawler_0002_crawls"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "crawler"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # No backfill from here: targets are folded from server.deployed / disabled / enabled, which the
    # crawler's new durable consumers read from the start of the SERVERS stream.
    op.create_table(
        "probe_targets",
        sa.Column("slug", sa.String(80), primary_key=True),
        sa.Column("server_id", UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("backend", sa.String(40), nullable=False),
        sa.Column("enabled", sa.Boolean, server_default=sa.text("true"), nullable=False),
        sa.Column("deployed_at", TS),
        sa.Column("decided_at", TS),
        sa.Column("last_call_at", TS),
        sa.Column("last_probe_at", TS),
        sa.Column("next_probe_at", TS),
        sa.Column("status", sa.String(20)),
        sa.Column("probed_status", sa.String(20)),
        sa.Column("tools_hash", sa.String(64)),
        sa.Column("last_reported_at", TS),
        schema=S,
    )
    op.create_index("ix_probe_targets_due", "probe_targets", ["enabled", "next_probe_at"], schema=S)
    op.create_table(
        "probe_results",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("slug", sa.String(80), nullable=False),
        sa.Column("at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("latency_ms", sa.Float),
        sa.Column("error", sa.Text),
        schema=S,
    )
    op.create_index("ix_probe_results_slug_at", "probe_results", ["slug", "at"], schema=S)


def downgrade() -> None:
    op.drop_index("ix_probe_results_slug_at", "probe_results", schema=S)
    op.drop_table("probe_results", schema=S)
    op.drop_index("ix_probe_targets_due", "probe_targets", schema=S)
    op.drop_table("probe_targets", schema=S)
