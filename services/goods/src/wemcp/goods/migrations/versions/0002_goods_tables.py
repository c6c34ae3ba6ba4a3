"""goods tables: products, plans, entitlements, accounts, usage per day, announcements

Backfill: goods cannot read other services' tables. Its new durable consumers start at the beginning
of the SERVERS, AGENTS and USERS streams (DeliverPolicy.ALL, 30 days kept), so every server and agent
with a lifecycle event in that window becomes a product when goods first starts; older ones when their
next lifecycle event (an update, a disable/enable, a new version) arrives.

Revision ID: goods_0002_goods_tables
Revises: goods_0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "goods_0002_goods_tables"
down_revision: str | None = "goods_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "goods"
UUID = pg.UUID(as_uuid=True)
TS = sa.DateTime(timezone=True)


def _stamps() -> list[sa.Column]:
    return [sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
            sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now())]


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("id", UUID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject_ref", UUID, nullable=False),
        sa.Column("slug", sa.String(200), nullable=False, server_default=""),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("title", sa.String(200), nullable=False, server_default=""),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("owner_id", UUID),
        sa.Column("merchant_id", UUID),
        sa.Column("merchant_assigned", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("deployed", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("deploy_position", pg.ARRAY(sa.Integer)),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("decision_seq", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("revision", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("source_saved_at", TS),
        sa.Column("merchant_delisted", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("copy_edited", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("listed_at", TS),
        sa.Column("refreshed_at", TS),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name="pk_products"),
        sa.UniqueConstraint("kind", "subject_ref", name="uq_products_subject"),
        sa.CheckConstraint("kind IN ('server', 'agent')", name="ck_products_kind"),
        sa.CheckConstraint("status IN ('pending', 'listed', 'delisted')", name="ck_products_status"),
        schema=S,
    )
    op.create_index("ix_products_merchant", "products", ["merchant_id"], schema=S)
    op.create_index("ix_products_status", "products", ["status", "listed_at"], schema=S)
    op.create_index("ix_products_slug", "products", ["kind", "slug"], schema=S)
    op.create_table(
        "plans",
        sa.Column("id", UUID, nullable=False),
        sa.Column("product_id", UUID, nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("calls_per_day", sa.Integer),
        sa.Column("price_cents", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("currency", sa.String(3), nullable=False, server_default="CNY"),
        sa.Column("period", sa.String(16), nullable=False, server_default="month"),
        sa.Column("is_free", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.text("true")),
        sa.Column("created_by", UUID),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name="pk_plans"),
        sa.UniqueConstraint("product_id", "code", name="uq_plans_code"),
        sa.ForeignKeyConstraint(["product_id"], [f"{S}.products.id"], ondelete="CASCADE",
                                name="fk_plans_product_id_products"),
        sa.CheckConstraint("calls_per_day IS NULL OR calls_per_day >= 0", name="ck_plans_calls_per_day"),
        sa.CheckConstraint("price_cents >= 0", name="ck_plans_price"),
        schema=S,
    )
    op.create_table(
        "entitlements",
        sa.Column("user_id", UUID, nullable=False),
        sa.Column("product_id", UUID, nullable=False),
        sa.Column("id", UUID, nullable=False),
        sa.Column("plan_id", UUID),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.text("true")),
        sa.Column("expires_at", TS),
        sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column("granted_by", UUID),
        sa.Column("note", sa.String(500), nullable=False, server_default=""),
        *_stamps(),
        sa.PrimaryKeyConstraint("user_id", "product_id", name="pk_entitlements"),
        sa.UniqueConstraint("id", name="uq_entitlements_id"),
        sa.ForeignKeyConstraint(["product_id"], [f"{S}.products.id"], ondelete="CASCADE",
                                name="fk_entitlements_product_id_products"),
        sa.ForeignKeyConstraint(["plan_id"], [f"{S}.plans.id"], ondelete="SET NULL",
                                name="fk_entitlements_plan_id_plans"),
        schema=S,
    )
    op.create_index("ix_entitlements_user", "entitlements", ["user_id"], schema=S)
    op.create_table(
        "accounts",
        sa.Column("user_id", UUID, nullable=False),
        sa.Column("role", sa.String(16), nullable=False, server_default="user"),
        sa.Column("role_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_accounts"),
        schema=S,
    )
    counters = [sa.Column(c, sa.BigInteger, nullable=False, server_default=sa.text("0"))
                for c in ("calls", "refused", "errors", "metered")]
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("slug", sa.String(200), nullable=False),
        *counters,
        sa.PrimaryKeyConstraint("day", "kind", "slug", name="pk_usage_daily"),
        schema=S,
    )
    op.create_table(
        "usage_users",
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("slug", sa.String(200), nullable=False),
        sa.Column("pseudonym", sa.String(40), nullable=False),
        sa.Column("calls", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("refused", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("day", "kind", "slug", "pseudonym", name="pk_usage_users"),
        schema=S,
    )
    op.create_table(
        "announcements",
        sa.Column("id", UUID, nullable=False),
        sa.Column("title_zh", sa.String(200), nullable=False, server_default=""),
        sa.Column("title_en", sa.String(200), nullable=False, server_default=""),
        sa.Column("body_zh", sa.Text, nullable=False, server_default=""),
        sa.Column("body_en", sa.Text, nullable=False, server_default=""),
        sa.Column("pinned", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("publish_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("expire_at", TS),
        sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column("created_by", UUID),
        sa.Column("updated_by", UUID),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name="pk_announcements"),
        schema=S,
    )
    op.create_index("ix_announcements_visible", "announcements", ["deleted", "publish_at"], schema=S)


def downgrade() -> None:
    for name in ("announcements", "usage_users", "usage_daily", "accounts", "entitlements", "plans", "products"):
        op.drop_table(name, schema=S)
