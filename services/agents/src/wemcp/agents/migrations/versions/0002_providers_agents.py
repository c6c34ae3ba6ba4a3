"""model providers and agents

Revision ID: agents_0002
Revises: agents_0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "agents_0002"
down_revision: str | None = "agents_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "agents"


def upgrade() -> None:
    op.create_table(
        "model_providers",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("base_url", sa.String(500), nullable=False),
        sa.Column("api_key_sealed", sa.LargeBinary, nullable=True),
        sa.Column("models", postgresql.JSONB, nullable=False, server_default="[]"),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_by", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_model_providers"),
        sa.UniqueConstraint("name", name="uq_model_providers_name"),
        schema=SCHEMA,
    )
    op.create_table(
        "agents",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("owner_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("owner_kind", sa.String(16), nullable=False, server_default="user"),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("instructions", sa.Text, nullable=False, server_default=""),
        sa.Column("mcp_servers", postgresql.JSONB, nullable=False, server_default="[]"),
        sa.Column("visibility", sa.String(16), nullable=False, server_default="private"),
        sa.Column("max_tool_rounds", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
        schema=SCHEMA,
    )
    op.create_index("ix_agents_owner_id", "agents", ["owner_id"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_agents_owner_id", table_name="agents", schema=SCHEMA)
    op.drop_table("agents", schema=SCHEMA)
    op.drop_table("model_providers", schema=SCHEMA)
