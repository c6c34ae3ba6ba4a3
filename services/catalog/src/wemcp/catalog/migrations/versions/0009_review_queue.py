"""servers: the review queue (pending_review, rejected) and trusted publishers

Revision ID: catalog_0009_review_queue
Revises: catalog_0008_health
Create Date: 2026-12-02

Backfill: every existing server was listed before reviews existed, so each is ``review_cleared``
(its owner's new versions keep deploying without review); no status changes. No publisher is
trusted yet: admins mark them (``PUT /api/v1/admin/publishers/{user_id}``); admins are trusted by role.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "catalog_0009_review_queue"
down_revision: str | None = "catalog_0008_health"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "catalog"


OLD = "'draft','submitted','deploying','published','failed','disabled'"
NEW = "'draft','pending_review','rejected','submitted','deploying','published','failed','disabled'"


def _status_check(values: str) -> None:
    # the name the naming convention gave it in 0002
    op.execute("ALTER TABLE catalog.servers DROP CONSTRAINT IF EXISTS ck_servers_ck_servers_status")
    op.execute(f"ALTER TABLE catalog.servers ADD CONSTRAINT ck_servers_ck_servers_status CHECK (status IN ({values}))")


def upgrade() -> None:
    _status_check(NEW)
    # true for the rows that exist (the backfill), false for every row inserted from now on
    op.add_column("servers", sa.Column("review_cleared", sa.Boolean, nullable=False, server_default="true"), schema=S)
    op.alter_column("servers", "review_cleared", server_default=sa.text("false"), schema=S)
    op.add_column("servers", sa.Column("reviewed_by", UUID(as_uuid=True)), schema=S)
    op.add_column("servers", sa.Column("reviewed_at", sa.DateTime(timezone=True)), schema=S)
    op.add_column("servers", sa.Column("review_reason", sa.Text), schema=S)
    op.add_column("servers", sa.Column("review_requested_at", sa.DateTime(timezone=True)), schema=S)
    op.create_index("ix_servers_review_queue", "servers", ["review_requested_at"], schema=S,
                    postgresql_where=sa.text("status = 'pending_review'"))
    op.create_table(
        "publishers",
        sa.Column("user_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("trusted", sa.Boolean, nullable=False, server_default="true"),
        sa.Column("note", sa.Text),
        sa.Column("set_by", UUID(as_uuid=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=S,
    )


def downgrade() -> None:
    op.execute("UPDATE catalog.servers SET status = 'draft' WHERE status IN ('pending_review', 'rejected')")
    op.execute("UPDATE catalog.servers SET status_before_disable = 'draft' "
               "WHERE status_before_disable IN ('pending_review', 'rejected')")
    _status_check(OLD)
    op.drop_table("publishers", schema=S)
    op.drop_index("ix_servers_review_queue", table_name="servers", schema=S)
    for col in ("review_requested_at", "review_reason", "reviewed_at", "reviewed_by", "review_cleared"):
        op.drop_column("servers", col, schema=S)
