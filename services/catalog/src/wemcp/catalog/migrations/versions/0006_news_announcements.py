"""news: announcements projected from goods (expiry, pinned, zh/en text, source version)

Existing news rows (admin-posted items and "new server" items) keep everything they had: the new
columns are NULL/false for them, which reads as "never expires, not pinned, one language".

Revision ID: catalog_0006_news_announcements
Revises: catalog_0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "catalog_0006_news_announcements"
down_revision: str | None = "catalog_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "catalog"


def upgrade() -> None:
    op.add_column("news", sa.Column("expires_at", sa.DateTime(timezone=True)), schema=S)
    op.add_column("news", sa.Column("pinned", sa.Boolean, nullable=False, server_default=sa.text("false")), schema=S)
    op.add_column("news", sa.Column("translations", postgresql.JSONB), schema=S)
    op.add_column("news", sa.Column("source_version", sa.Integer), schema=S)


def downgrade() -> None:
    for col in ("source_version", "translations", "pinned", "expires_at"):
        op.drop_column("news", col, schema=S)
