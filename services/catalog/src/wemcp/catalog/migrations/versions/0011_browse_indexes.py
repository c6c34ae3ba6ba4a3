"""browse indexes on the search projection: one per browse order, over enabled rows only

Revision ID: catalog_0011_browse_indexes
Revises: catalog_0010_search_bigrams
Create Date: 2026-12-02

A browse page (a search without a query: the console's home and category pages) is ordered by
``repository.search.BROWSE_SORTS``; only the single-column indexes of 0003 existed, so the default
order (featured, popularity, published_at) sorted every enabled row for each page: 88 ms at 100k
rows, 0.2 ms with its index (EXPLAIN ANALYZE, bench/README.md). The indexes are partial
(``WHERE enabled``, as every browse is) and carry ``server_id``, the orders' last key, so a page is
read in order and stops at its ``LIMIT``; the smallest of them also serves the page's ``count(*)``
as an index-only scan. No data changes; downgrade drops them.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "catalog_0011_browse_indexes"
down_revision: str | None = "catalog_0010_search_bigrams"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "catalog"

# name -> the columns of one browse order (repository.search.BROWSE_SORTS, in that order)
INDEXES = {
    "ix_search_docs_browse_relevance": "featured DESC, popularity DESC, published_at DESC, server_id",
    "ix_search_docs_browse_newest": "published_at DESC, server_id",
    "ix_search_docs_browse_popular": "popularity DESC, server_id",
    "ix_search_docs_browse_name": "sort_name, server_id",
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON {S}.search_docs ({columns}) WHERE enabled")


def downgrade() -> None:
    for name in INDEXES:
        op.execute(f"DROP INDEX {S}.{name}")
