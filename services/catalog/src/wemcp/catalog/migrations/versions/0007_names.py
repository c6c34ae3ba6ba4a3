"""names people can trust: how each server's name was proven, users' platform handles, domain claims

Revision ID: catalog_0007_names
Revises: catalog_0006_news_announcements
Create Date: 2026-12-02

What happens to each existing name (backfill of ``servers.name_verification``):

- a row without an owner (crawled, imported, or listed by the crawler) keeps its name, slug and
  ``/mcp/{slug}`` URL; ``name_verification`` stays NULL (no badge) and the verified owner of its
  namespace can claim it (``POST /api/v1/servers/{slug}/claim``);
- a row with an owner keeps its name, slug and URL and is marked ``legacy`` (no badge): its owner
  may keep publishing new versions under it; the first one whose namespace the owner proves then
  earns the badge. Until then the verified owner of the namespace can claim it, since nothing
  proved it was the holder's to take (``io.github.someone-else/...`` listed first by a squatter);
- nothing is renamed, so no slug, URL or registry name changes; the rules apply to new names.
No network is asked during the migration (no GitHub, no DNS): proofs happen at submission or claim.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "catalog_0007_names"
down_revision: str | None = "catalog_0006_news_announcements"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "catalog"


def upgrade() -> None:
    op.add_column("servers", sa.Column("name_verification", sa.String(20)), schema=S)
    op.add_column("servers", sa.Column("name_verified_at", sa.DateTime(timezone=True)), schema=S)
    op.execute("UPDATE catalog.servers SET name_verification = 'legacy' WHERE owner_id IS NOT NULL")
    op.create_table(
        "handles",
        sa.Column("handle", sa.String(40), primary_key=True),
        sa.Column("owner_id", UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema=S)
    op.create_table(
        "domain_claims",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("owner_id", UUID(as_uuid=True), nullable=False),
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("method", sa.String(10)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("verified_at", sa.DateTime(timezone=True)),
        sa.Column("checked_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("owner_id", "domain", name="uq_domain_claims_owner_domain"),
        schema=S)
    op.create_index("ix_domain_claims_domain", "domain_claims", ["domain"], schema=S)


def downgrade() -> None:
    op.drop_table("domain_claims", schema=S)
    op.drop_table("handles", schema=S)
    op.drop_column("servers", "name_verified_at", schema=S)
    op.drop_column("servers", "name_verification", schema=S)
