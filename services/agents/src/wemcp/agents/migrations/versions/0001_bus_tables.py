"""bus tables: outbox, processed events, dead letters, probe receipts

Revision ID: agents_0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

from wemcp.common.migrations import create_bus_tables, create_probe_receipts, drop_bus_tables

revision: str = "agents_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "agents"


def upgrade() -> None:
    create_bus_tables(SCHEMA)
    create_probe_receipts(SCHEMA)


def downgrade() -> None:
    op.drop_table("probe_receipts", schema=SCHEMA)
    drop_bus_tables(SCHEMA)
