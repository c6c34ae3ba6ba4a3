"""per-user submission log (the submission rate limit)

Revision ID: catalog_0004
Revises: catalog_0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "catalog_0004"
down_revision: str | None = "catalog_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "catalog"


def upgrade() -> None:
    # no backfill: the rate counts submissions from now on (a window of one hour)
    op.create_table(
        "submissions",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("owner_id", UUID(as_uuid=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        schema=S,
    )
    op.create_index("ix_submissions_owner_at", "submissions", ["owner_id", "at"], schema=S)


def downgrade() -> None:
    op.drop_index("ix_submissions_owner_at", "submissions", schema=S)
    op.drop_table("submissions", schema=S)
