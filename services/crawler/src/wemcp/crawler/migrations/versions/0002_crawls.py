"""discovery crawls: runs, per-source state (position, lease, watermark), discovered packages

Revision ID: crawler_0002_crawls
Revises: crawler_0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "crawler_0002_crawls"
down_revision: str | None = "crawler_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "crawler"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # new tables only: nothing to backfill (nothing was crawled before)
    op.create_table(
        "crawl_runs",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("started_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("found", sa.Integer, server_default=sa.text("0"), nullable=False),
        sa.Column("new", sa.Integer, server_default=sa.text("0"), nullable=False),
        sa.Column("updated", sa.Integer, server_default=sa.text("0"), nullable=False),
        sa.Column("errors", sa.Integer, server_default=sa.text("0"), nullable=False),
        sa.Column("pages", sa.Integer, server_default=sa.text("0"), nullable=False),
        sa.Column("requests", sa.Integer, server_default=sa.text("0"), nullable=False),
        sa.Column("error_detail", JSONB, server_default=sa.text("'[]'"), nullable=False),
        sa.Column("resumed_from", UUID(as_uuid=True)),
        sa.Column("since", TS),
        schema=S,
    )
    op.create_index("ix_crawl_runs_started", "crawl_runs", ["started_at"], schema=S)
    op.create_index("ix_crawl_runs_source_started", "crawl_runs", ["source", "started_at"], schema=S)
    op.create_table(
        "crawl_state",
        sa.Column("source", sa.String(20), primary_key=True),
        sa.Column("run_id", UUID(as_uuid=True)),
        sa.Column("cursor", JSONB),
        sa.Column("since", TS),
        sa.Column("watermark", TS),
        sa.Column("lease_owner", sa.String(80)),
        sa.Column("lease_until", TS),
        schema=S,
    )
    op.create_table(
        "discovered",
        sa.Column("package_key", sa.String(400), primary_key=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(64)),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("pypi_name", sa.Text),
        sa.Column("first_seen", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("last_seen", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("emitted", sa.BigInteger, server_default=sa.text("0"), nullable=False),
        schema=S,
    )
    op.create_index("ix_discovered_source", "discovered", ["source"], schema=S)


def downgrade() -> None:
    op.drop_index("ix_discovered_source", "discovered", schema=S)
    op.drop_table("discovered", schema=S)
    op.drop_table("crawl_state", schema=S)
    op.drop_index("ix_crawl_runs_source_started", "crawl_runs", schema=S)
    op.drop_index("ix_crawl_runs_started", "crawl_runs", schema=S)
    op.drop_table("crawl_runs", schema=S)
