"""bus tables: outbox, processed events, dead letters, probe receipts

Revision ID: catalog_0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from wemcp.common.migrations import create_bus_tables, drop_bus_tables

revision: str = "catalog_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "catalog"


def upgrade() -> None:
    create_bus_tables(SCHEMA)
    op.create_table(
        "probe_receipts",
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("note", sa.String(200), nullable=False, server_default=""),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("handled_by_pid", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_probe_receipts"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("probe_receipts", schema=SCHEMA)
    drop_bus_tables(SCHEMA)
