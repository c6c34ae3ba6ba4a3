"""deployment_logs: the log lines of each deployment attempt (install output, the server's start-up
output), redacted, for GET /api/v1/deployments/{slug}/events

Revision ID: deployer_0003
Revises: deployer_0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "deployer_0003"
down_revision: str | None = "deployer_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "deployer"


def upgrade() -> None:
    # nothing to backfill: attempts made before this table have their steps in deployments.steps and
    # their failure output in deployments.log_tail, which the stream replays as they are
    op.create_table(
        "deployment_logs",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("deployment_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("line", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_deployment_logs"),
        sa.ForeignKeyConstraint(["deployment_id"], [f"{SCHEMA}.deployments.id"], ondelete="CASCADE",
                                name="fk_deployment_logs_deployment_id_deployments"),
        schema=SCHEMA,
        comment="log lines of deployment attempts (redacted), streamed to owners and admins",
    )
    op.create_index("ix_deployment_logs_attempt", "deployment_logs", ["deployment_id", "generation", "id"],
                    schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_deployment_logs_attempt", "deployment_logs", schema=SCHEMA)
    op.drop_table("deployment_logs", schema=SCHEMA)
