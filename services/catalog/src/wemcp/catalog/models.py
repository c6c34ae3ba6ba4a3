"""Tables of the catalog service, all in the ``catalog`` schema.

- ``servers`` is table A: one wide row per MCP server (source spec, status, owner, hand-kept and
  deployment-filled fields, counters).
- ``search_docs`` is table B: the search projection. Only the catalog's event handlers write it.
- ``categories``, ``news`` and ``archives`` (uploaded source archives) complete the aggregate.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from wemcp.common.db import service_bus_tables, service_metadata, timestamp_now, uuid_pk


class Base(DeclarativeBase):
    metadata = service_metadata("catalog")

bus_tables, probe_receipts = service_bus_tables(Base.metadata)

EMBEDDING_DIM = 384
STATUSES = ("draft", "pending_review", "rejected", "submitted", "deploying", "published", "failed", "disabled")


class Server(Base):
    """Table A."""

    __tablename__ = "servers"
    __table_args__ = (
        UniqueConstraint("package_key", "version", name="uq_servers_package_version"),
        Index("ix_servers_owner", "owner_id"),
        Index("ix_servers_status", "status"),
        Index("ix_servers_name", "name"),
        Index("ix_servers_updated", "updated_at", "id"),
        Index("ix_servers_review_queue", "review_requested_at", postgresql_where=text("status = 'pending_review'")),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    name: Mapped[str] = mapped_column(String(200))  # registry style: io.github.user/weather
    version: Mapped[str] = mapped_column(String(64))
    package_key: Mapped[str] = mapped_column(String(400))  # "npm:@scope/pkg", "remote:https://..."
    title: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    readme: Mapped[str] = mapped_column(Text, default="")
    icon: Mapped[str] = mapped_column(String(500))
    owner_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    source_kind: Mapped[str] = mapped_column(String(20))  # server.json | mcpServers | openapi | archive | import
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(20), default="submitted")
    status_detail: Mapped[str | None] = mapped_column(Text)
    status_before_disable: Mapped[str | None] = mapped_column(String(20))
    withdrawn: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # the ordering rule (docs/events.md): the newest deployment event applied, and the last decision
    lifecycle_generation: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    lifecycle_seq: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    lifecycle_terminal: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    lifecycle_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # its occurred_at
    decision_seq: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))  # disable/enable count
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))  # submissions emitted
    # names.py: how the name's namespace was proven for its owner (github | github_org | dns | http |
    # platform; legacy: listed before the naming rules; transferred: by an admin; NULL: owner-less or
    # listed by an admin without proof) and when
    name_verification: Mapped[str | None] = mapped_column(String(20))
    name_verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # the review queue: whether this package was cleared to deploy (a trusted publisher's, or an admin
    # approved it; its owner's new versions then deploy without review), and the last decision
    review_cleared: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    reviewed_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    review_reason: Mapped[str | None] = mapped_column(Text)
    review_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # hand-kept
    category: Mapped[str | None] = mapped_column(String(64))
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list, server_default=text("'{}'"))
    featured: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # filled from deployment
    tools: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list, server_default=text("'[]'"))
    prompts: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list, server_default=text("'[]'"))
    resources: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list, server_default=text("'[]'"))
    endpoints: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list, server_default=text("'[]'"))
    deploy_backend: Mapped[str | None] = mapped_column(String(40))
    # counters
    calls: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    stars: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # timestamps
    created_at: Mapped[datetime] = timestamp_now()
    updated_at: Mapped[datetime] = timestamp_now()
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deployed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # health, from the crawler's probes (server.health): the latest check applied
    health_status: Mapped[str | None] = mapped_column(String(20))  # up | degraded | down | idle
    health_checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    health: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # uptime, latency, error of that check


class SearchDoc(Base):
    """Table B: what search reads. A row exists once a server was deployed; ``enabled`` follows
    server.disabled / server.enabled."""

    __tablename__ = "search_docs"
    __table_args__ = (
        Index("ix_search_docs_tsv", "tsv", postgresql_using="gin"),
        Index("ix_search_docs_trgm", "name_trgm", postgresql_using="gin",
              postgresql_ops={"name_trgm": "gin_trgm_ops"}),
        Index("ix_search_docs_embedding", "embedding", postgresql_using="hnsw",
              postgresql_with={"m": 16, "ef_construction": 64},
              postgresql_ops={"embedding": "vector_cosine_ops"}),
        Index("ix_search_docs_category", "category"),
        Index("ix_search_docs_tags", "tags", postgresql_using="gin"),
        Index("ix_search_docs_published", "published_at"),
        Index("ix_search_docs_popularity", "popularity"),
        Index("ix_search_docs_sort_name", "sort_name"),
        Index("ix_search_docs_health", "health"),
        # one per browse order (repository.search.BROWSE_SORTS), enabled rows only (catalog_0011)
        Index("ix_search_docs_browse_relevance", text("featured DESC"), text("popularity DESC"),
              text("published_at DESC"), "server_id", postgresql_where=text("enabled")),
        Index("ix_search_docs_browse_newest", text("published_at DESC"), "server_id", postgresql_where=text("enabled")),
        Index("ix_search_docs_browse_popular", text("popularity DESC"), "server_id", postgresql_where=text("enabled")),
        Index("ix_search_docs_browse_name", "sort_name", "server_id", postgresql_where=text("enabled")),
    )

    server_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("catalog.servers.id", ondelete="CASCADE"), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    tsv: Mapped[Any] = mapped_column(TSVECTOR)
    name_trgm: Mapped[str] = mapped_column(Text)
    embedding: Mapped[Any] = mapped_column(Vector(EMBEDDING_DIM), nullable=True)
    embedded_text_hash: Mapped[str | None] = mapped_column(String(64))
    category: Mapped[str | None] = mapped_column(String(64))
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list, server_default=text("'{}'"))
    sort_name: Mapped[str] = mapped_column(String(200))
    popularity: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    health: Mapped[str | None] = mapped_column(String(20))  # A's health_status (the "healthy" filter)
    featured: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    published_at: Mapped[datetime] = timestamp_now()
    updated_at: Mapped[datetime] = timestamp_now()


class Category(Base):
    __tablename__ = "categories"

    slug: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    parent_slug: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("catalog.categories.slug", ondelete="RESTRICT"))
    position: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


class News(Base):
    __tablename__ = "news"
    __table_args__ = (Index("ix_news_published", "published", "published_at"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    kind: Mapped[str] = mapped_column(String(32))  # announcement | server_published
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    server_slug: Mapped[str | None] = mapped_column(String(80))
    published: Mapped[bool] = mapped_column(Boolean, default=True)
    published_at: Mapped[datetime] = timestamp_now()
    author_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # announcements projected from goods (goods.announcement_changed); NULL for admin-posted news
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pinned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    translations: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # {"zh": {"title", "body"}, "en": ...}
    source_version: Mapped[int | None] = mapped_column(Integer)


class Archive(Base):
    """An uploaded source archive (already checked: no traversal, bounded expansion)."""

    __tablename__ = "archives"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    expanded_size: Mapped[int] = mapped_column(BigInteger)
    entries: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(10))  # tar.gz | zip
    manifest: Mapped[dict[str, Any]] = mapped_column(JSONB)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    owner_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = timestamp_now()


class Submission(Base):
    """One accepted submission (new server or new version) by a user: the per-user submission rate
    is counted here (rows older than a day are pruned as the user submits again)."""

    __tablename__ = "submissions"
    __table_args__ = (Index("ix_submissions_owner_at", "owner_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    at: Mapped[datetime] = timestamp_now()


class Handle(Base):
    """A user's own namespace on the platform: ``<platform namespace>.<handle>/...`` belongs to
    ``owner_id`` for good (kept when the login changes)."""

    __tablename__ = "handles"

    handle: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    created_at: Mapped[datetime] = timestamp_now()


class DomainClaim(Base):
    """A user's claim on a domain: a challenge token to publish (DNS TXT or the HTTP well-known
    file); ``verified_at``/``method`` once it was found there. Reverse-DNS names under the domain
    (``com.example/...``; with a DNS proof also its subdomains) are then the user's to publish."""

    __tablename__ = "domain_claims"
    __table_args__ = (UniqueConstraint("owner_id", "domain", name="uq_domain_claims_owner_domain"),
                      Index("ix_domain_claims_domain", "domain"))

    id: Mapped[uuid.UUID] = uuid_pk()
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    domain: Mapped[str] = mapped_column(String(253))
    token: Mapped[str] = mapped_column(String(64))
    method: Mapped[str | None] = mapped_column(String(10))  # dns | http, once verified
    created_at: Mapped[datetime] = timestamp_now()
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Publisher(Base):
    """A user an admin marked as a trusted publisher: their submissions skip the review queue (as do
    those of admins, by role). A row with ``trusted`` false is a revoked trust, kept for the record."""

    __tablename__ = "publishers"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    trusted: Mapped[bool] = mapped_column(Boolean, default=True)
    note: Mapped[str | None] = mapped_column(Text)
    set_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    updated_at: Mapped[datetime] = timestamp_now()
