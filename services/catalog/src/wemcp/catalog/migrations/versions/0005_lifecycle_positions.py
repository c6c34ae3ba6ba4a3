"""servers: the lifecycle position applied and the decision and submission counters

Revision ID: catalog_0005
Revises: catalog_0004
Create Date: 2026-12-01

Backfill: generation and seq 0 (every stamped event is newer); ``lifecycle_terminal`` from the
status deployment reached (``published``/``failed``, or the same before a disable), so a late
unstamped step cannot roll a finished deployment back; ``lifecycle_at`` from ``deployed_at`` (the
only event time the catalog kept before); ``decision_seq`` 1 for a server disabled now (it was
decided once at least), else 0; ``revision`` 1 (every row was submitted once at least).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "catalog_0005"
down_revision: str | None = "catalog_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "catalog"


def upgrade() -> None:
    op.add_column("servers", sa.Column("lifecycle_generation", sa.Integer, nullable=False, server_default="0"),
                  schema=S)
    op.add_column("servers", sa.Column("lifecycle_seq", sa.Integer, nullable=False, server_default="0"), schema=S)
    op.add_column("servers", sa.Column("lifecycle_terminal", sa.Boolean, nullable=False, server_default="false"),
                  schema=S)
    op.add_column("servers", sa.Column("lifecycle_at", sa.DateTime(timezone=True)), schema=S)
    op.add_column("servers", sa.Column("decision_seq", sa.Integer, nullable=False, server_default="0"), schema=S)
    op.add_column("servers", sa.Column("revision", sa.Integer, nullable=False, server_default="0"), schema=S)
    op.execute(
        "UPDATE catalog.servers SET lifecycle_at = deployed_at, "
        "lifecycle_terminal = COALESCE((CASE WHEN status = 'disabled' THEN status_before_disable ELSE status END) "
        "IN ('published', 'failed'), false), "
        "decision_seq = CASE WHEN status = 'disabled' THEN 1 ELSE 0 END, revision = 1")


def downgrade() -> None:
    for col in ("revision", "decision_seq", "lifecycle_at", "lifecycle_terminal", "lifecycle_seq",
                "lifecycle_generation"):
        op.drop_column("servers", col, schema=S)
