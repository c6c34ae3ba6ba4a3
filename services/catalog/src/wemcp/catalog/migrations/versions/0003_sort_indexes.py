"""sort indexes on the search projection (browse by popularity and name at 100k rows)

Revision ID: catalog_0003
Revises: catalog_0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "catalog_0003"
down_revision: str | None = "catalog_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "catalog"


def upgrade() -> None:
    op.create_index("ix_search_docs_popularity", "search_docs", ["popularity"], schema=S)
    op.create_index("ix_search_docs_sort_name", "search_docs", ["sort_name"], schema=S)


def downgrade() -> None:
    op.drop_index("ix_search_docs_sort_name", "search_docs", schema=S)
    op.drop_index("ix_search_docs_popularity", "search_docs", schema=S)
