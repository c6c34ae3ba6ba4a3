"""deployments

Revision ID: deployer_0002
Revises: deployer_0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "deployer_0002"
down_revision: str | None = "deployer_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "deployer"


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("server_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("slug", sa.String(200), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("owner_id", postgresql.UUID(as_uuid=True)),
        sa.Column("spec", postgresql.JSONB, nullable=False),
        sa.Column("backend", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("desired", sa.String(20), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("steps", postgresql.JSONB, nullable=False),
        sa.Column("endpoint", sa.Text),
        sa.Column("transport", sa.String(40)),
        sa.Column("protocol_versions", postgresql.JSONB, nullable=False),
        sa.Column("package_version", sa.String(100)),
        sa.Column("introspection", postgresql.JSONB, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("log_tail", sa.Text, nullable=False),
        sa.Column("lease_owner", sa.String(100)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("deployed_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_deployments"),
        sa.UniqueConstraint("slug", name="uq_deployments_slug"),
        schema=SCHEMA,
        comment="deployments of submitted servers",
    )
    op.create_index("ix_deployments_work", "deployments", ["updated_at"], schema=SCHEMA,
                    postgresql_where=sa.text("status IN ('queued', 'deploying', 'stopping')"))


def downgrade() -> None:
    op.drop_index("ix_deployments_work", "deployments", schema=SCHEMA)
    op.drop_table("deployments", schema=SCHEMA)
