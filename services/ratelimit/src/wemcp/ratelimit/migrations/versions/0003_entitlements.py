"""entitlements: users' plans granted through goods (goods.entitlement_changed)

Nothing to backfill: the table starts empty, and the ratelimit service's new consumer of
``goods.entitlement_changed`` reads the GOODS stream from its start (every entitlement granted so far).

Revision ID: ratelimit_0003_entitlements
Revises: ratelimit_0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "ratelimit_0003_entitlements"
down_revision: str | None = "ratelimit_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "ratelimit"


def upgrade() -> None:
    op.create_table(
        "entitlements",
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("subject_kind", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(200), nullable=False),
        sa.Column("entitlement_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("plan_code", sa.String(64), nullable=False, server_default=""),
        sa.Column("per_user_daily", sa.Integer),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("user_id", "subject_kind", "subject_id", name="pk_entitlements"),
        sa.CheckConstraint("subject_kind IN ('server', 'agent')", name="ck_entitlements_kind"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("entitlements", schema=SCHEMA)
