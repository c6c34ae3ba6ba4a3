"""server health from the crawler's probes: A's health columns, B's health (the healthy filter)

Revision ID: catalog_0008_health
Revises: catalog_0007_names
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "catalog_0008_health"
down_revision: str | None = "catalog_0007_names"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "catalog"


def upgrade() -> None:
    # Nullable columns: existing rows have no check yet (NULL = unknown), which is what they show
    # until the first server.health event; nothing to backfill.
    op.add_column("servers", sa.Column("health_status", sa.String(20)), schema=S)
    op.add_column("servers", sa.Column("health_checked_at", sa.DateTime(timezone=True)), schema=S)
    op.add_column("servers", sa.Column("health", JSONB), schema=S)
    op.add_column("search_docs", sa.Column("health", sa.String(20)), schema=S)
    op.create_index("ix_search_docs_health", "search_docs", ["health"], schema=S)


def downgrade() -> None:
    op.drop_index("ix_search_docs_health", "search_docs", schema=S)
    op.drop_column("search_docs", "health", schema=S)
    op.drop_column("servers", "health", schema=S)
    op.drop_column("servers", "health_checked_at", schema=S)
    op.drop_column("servers", "health_status", schema=S)
