"""Tables of the goods service, all in the ``goods`` schema.

- ``products``: one per listed server or agent, kept in step by lifecycle events. Its ``status`` is
  derived from the facts the events brought (deployed, disabled, public, a merchant's delisting),
  each fact guarded by the producer's own counter so that a late or repeated event changes nothing.
- ``plans``: the free plan of every product and the raised plans a merchant or admin defines.
- ``entitlements``: a user's right to a plan of a product; every change bumps ``version`` and emits
  ``goods.entitlement_changed`` (the ratelimit service applies it to the user's daily limit).
- ``accounts``: the role of every user goods heard of (``user.registered``/``user.role_changed``),
  to tell whether a product's owner is a merchant.
- ``usage_daily`` / ``usage_users``: calls, refusals and distinct users per product and day, from
  the gateway's call events.
- ``announcements``: written by the superadmin, public while published and not expired.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from wemcp.common.db import service_bus_tables, service_metadata, timestamp_now, uuid_pk


class Base(DeclarativeBase):
    metadata = service_metadata("goods")


bus_tables, probe_receipts = service_bus_tables(Base.metadata)



class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        UniqueConstraint("kind", "subject_ref", name="uq_products_subject"),
        CheckConstraint("kind IN ('server', 'agent')", name="kind"),
        CheckConstraint("status IN ('pending', 'listed', 'delisted')", name="status"),
        Index("ix_products_merchant", "merchant_id"),
        Index("ix_products_status", "status", "listed_at"),
        Index("ix_products_slug", "kind", "slug"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    kind: Mapped[str] = mapped_column(String(16))
    # the server's id or the agent's id (what lifecycle events name)
    subject_ref: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    # what quotas and call events name: the server's slug, the agent's id as text
    slug: Mapped[str] = mapped_column(String(200), default="")
    name: Mapped[str] = mapped_column(String(200), default="")
    title: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    owner_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    merchant_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))  # None: the platform's
    merchant_assigned: Mapped[bool] = mapped_column(Boolean, default=False)  # by an admin: sticks
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # facts from the lifecycle, each with the producer's counter that last set it
    deployed: Mapped[bool] = mapped_column(Boolean, default=False)
    deploy_position: Mapped[list[int] | None] = mapped_column(
        ARRAY(Integer))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    decision_seq: Mapped[int] = mapped_column(Integer, default=0)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    source_saved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    merchant_delisted: Mapped[bool] = mapped_column(Boolean, default=False)
    copy_edited: Mapped[bool] = mapped_column(Boolean, default=False)  # the merchant's copy wins
    listed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    refreshed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = timestamp_now()
    updated_at: Mapped[datetime] = timestamp_now(onupdate=True)


class Plan(Base):
    __tablename__ = "plans"
    __table_args__ = (
        UniqueConstraint("product_id", "code", name="uq_plans_code"),
        CheckConstraint("calls_per_day IS NULL OR calls_per_day >= 0", name="calls_per_day"),
        CheckConstraint("price_cents >= 0", name="price"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True),
                                                  ForeignKey("goods.products.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    calls_per_day: Mapped[int | None] = mapped_column(Integer)  # None: unlimited
    price_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    period: Mapped[str] = mapped_column(String(16), default="month")
    is_free: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = timestamp_now()
    updated_at: Mapped[datetime] = timestamp_now(onupdate=True)


class Entitlement(Base):
    __tablename__ = "entitlements"
    __table_args__ = (Index("ix_entitlements_user", "user_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    product_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True),
                                                  ForeignKey("goods.products.id", ondelete="CASCADE"),
                                                  primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), default=uuid.uuid4, unique=True)
    plan_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True),
                                                      ForeignKey("goods.plans.id", ondelete="SET NULL"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, default=1)
    granted_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = timestamp_now()
    updated_at: Mapped[datetime] = timestamp_now(onupdate=True)


class Account(Base):
    """The role goods knows for a user (from auth's events); ``role_at`` orders them."""

    __tablename__ = "accounts"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), default="user")
    role_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UsageDaily(Base):
    """Calls per product and local day (the quota day's zone)."""

    __tablename__ = "usage_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    slug: Mapped[str] = mapped_column(String(200), primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    refused: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    metered: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageUser(Base):
    """Which (pseudonymised) users called a product on a day: the distinct-user counts."""

    __tablename__ = "usage_users"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    slug: Mapped[str] = mapped_column(String(200), primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(40), primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    refused: Mapped[int] = mapped_column(BigInteger, default=0)


class Announcement(Base):
    __tablename__ = "announcements"
    __table_args__ = (Index("ix_announcements_visible", "deleted", "publish_at"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    title_zh: Mapped[str] = mapped_column(String(200), default="")
    title_en: Mapped[str] = mapped_column(String(200), default="")
    body_zh: Mapped[str] = mapped_column(Text, default="")
    body_en: Mapped[str] = mapped_column(Text, default="")
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    publish_at: Mapped[datetime] = timestamp_now()
    expire_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    updated_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = timestamp_now()
    updated_at: Mapped[datetime] = timestamp_now(onupdate=True)
