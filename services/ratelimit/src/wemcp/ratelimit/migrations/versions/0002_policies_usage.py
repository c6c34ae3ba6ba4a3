"""quota policies and daily usage

Revision ID: ratelimit_0002
Revises: ratelimit_0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "ratelimit_0002"
down_revision: str | None = "ratelimit_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "ratelimit"


def upgrade() -> None:
    op.create_table(
        "quota_policies",
        sa.Column("subject_kind", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(200), nullable=False),
        sa.Column("plan", sa.String(64), nullable=False, server_default=""),
        sa.Column("per_user_daily", sa.Integer),
        sa.Column("global_daily_cap", sa.Integer),
        sa.Column("note", sa.String(500), nullable=False, server_default=""),
        sa.Column("updated_by", postgresql.UUID(as_uuid=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("subject_kind", "subject_id", "plan", name="pk_quota_policies"),
        sa.CheckConstraint("subject_kind IN ('server', 'agent')", name="ck_quota_policies_kind"),
        sa.CheckConstraint("per_user_daily IS NULL OR per_user_daily >= 0",
                           name="ck_quota_policies_per_user_daily"),
        sa.CheckConstraint("global_daily_cap IS NULL OR global_daily_cap >= 0",
                           name="ck_quota_policies_global_daily_cap"),
        schema=SCHEMA,
    )
    op.create_table(
        "daily_usage",
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("subject_kind", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(200), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("calls", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("metered", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("own_key", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("in_agent_run", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("refused", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("errors", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("latency_ms_sum", sa.Float, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("day", "subject_kind", "subject_id", "user_id", name="pk_daily_usage"),
        schema=SCHEMA,
    )
    # /me/usage: one user's rows for one day
    op.create_index("ix_daily_usage_user_day", "daily_usage", ["user_id", "day"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_daily_usage_user_day", "daily_usage", schema=SCHEMA)
    op.drop_table("daily_usage", schema=SCHEMA)
    op.drop_table("quota_policies", schema=SCHEMA)
