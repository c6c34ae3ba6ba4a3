"""catalog tables: servers (A), search_docs (B), categories, news, archives

Revision ID: catalog_0002
Revises: catalog_0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

revision: str = "catalog_0002"
down_revision: str | None = "catalog_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "catalog"
UUID = postgresql.UUID(as_uuid=True)
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_table(
        "servers",
        sa.Column("id", UUID, nullable=False),
        sa.Column("slug", sa.String(80), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("package_key", sa.String(400), nullable=False),
        sa.Column("title", sa.String(120), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("readme", sa.Text, nullable=False, server_default=""),
        sa.Column("icon", sa.String(500), nullable=False),
        sa.Column("owner_id", UUID),
        sa.Column("source_kind", sa.String(20), nullable=False),
        sa.Column("spec", postgresql.JSONB, nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="submitted"),
        sa.Column("status_detail", sa.Text),
        sa.Column("status_before_disable", sa.String(20)),
        sa.Column("withdrawn", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("category", sa.String(64)),
        sa.Column("tags", postgresql.ARRAY(sa.String(32)), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("featured", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("tools", postgresql.JSONB, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("prompts", postgresql.JSONB, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("resources", postgresql.JSONB, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("endpoints", postgresql.JSONB, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("deploy_backend", sa.String(40)),
        sa.Column("calls", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("stars", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", TS),
        sa.Column("deployed_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_servers"),
        sa.UniqueConstraint("slug", name="uq_servers_slug"),
        sa.UniqueConstraint("package_key", "version", name="uq_servers_package_version"),
        sa.CheckConstraint("status IN ('draft','submitted','deploying','published','failed','disabled')",
                           name="ck_servers_status"),
        schema=S,
    )
    op.create_index("ix_servers_owner", "servers", ["owner_id"], schema=S)
    op.create_index("ix_servers_status", "servers", ["status"], schema=S)
    op.create_index("ix_servers_name", "servers", ["name"], schema=S)
    op.create_index("ix_servers_updated", "servers", ["updated_at", "id"], schema=S)

    op.create_table(
        "search_docs",
        sa.Column("server_id", UUID, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.text("true")),
        sa.Column("tsv", postgresql.TSVECTOR, nullable=False),
        sa.Column("name_trgm", sa.Text, nullable=False),
        sa.Column("embedding", Vector(384)),
        sa.Column("embedded_text_hash", sa.String(64)),
        sa.Column("category", sa.String(64)),
        sa.Column("tags", postgresql.ARRAY(sa.String(32)), nullable=False, server_default=sa.text("'{}'")),
        sa.Column("sort_name", sa.String(200), nullable=False),
        sa.Column("popularity", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("featured", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("published_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("server_id", name="pk_search_docs"),
        sa.ForeignKeyConstraint(["server_id"], [f"{S}.servers.id"], ondelete="CASCADE",
                                name="fk_search_docs_server_id_servers"),
        schema=S,
    )
    op.create_index("ix_search_docs_tsv", "search_docs", ["tsv"], schema=S, postgresql_using="gin")
    op.execute(f"CREATE INDEX ix_search_docs_trgm ON {S}.search_docs USING gin (name_trgm gin_trgm_ops)")
    op.execute(f"CREATE INDEX ix_search_docs_embedding ON {S}.search_docs USING hnsw "
               f"(embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)")
    op.create_index("ix_search_docs_category", "search_docs", ["category"], schema=S)
    op.create_index("ix_search_docs_tags", "search_docs", ["tags"], schema=S, postgresql_using="gin")
    op.create_index("ix_search_docs_published", "search_docs", ["published_at"], schema=S)

    op.create_table(
        "categories",
        sa.Column("slug", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("parent_slug", sa.String(64)),
        sa.Column("position", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("slug", name="pk_categories"),
        sa.ForeignKeyConstraint(["parent_slug"], [f"{S}.categories.slug"], ondelete="RESTRICT",
                                name="fk_categories_parent_slug_categories"),
        schema=S,
    )
    op.create_table(
        "news",
        sa.Column("id", UUID, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=False, server_default=""),
        sa.Column("server_slug", sa.String(80)),
        sa.Column("published", sa.Boolean, nullable=False, server_default=sa.text("true")),
        sa.Column("published_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("author_id", UUID),
        sa.PrimaryKeyConstraint("id", name="pk_news"),
        schema=S,
    )
    op.create_index("ix_news_published", "news", ["published", "published_at"], schema=S)
    op.create_table(
        "archives",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("expanded_size", sa.BigInteger, nullable=False),
        sa.Column("entries", sa.Integer, nullable=False),
        sa.Column("format", sa.String(10), nullable=False),
        sa.Column("manifest", postgresql.JSONB, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("owner_id", UUID),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("sha256", name="pk_archives"),
        schema=S,
    )


def downgrade() -> None:
    op.drop_table("archives", schema=S)
    op.drop_table("news", schema=S)
    op.drop_table("categories", schema=S)
    op.drop_table("search_docs", schema=S)
    op.drop_table("servers", schema=S)
