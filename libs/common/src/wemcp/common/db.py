"""Async SQLAlchemy glue: one engine per process, one Postgres schema per service.

Every service declares its models on a base whose metadata comes from :func:`service_metadata`, so
that all its tables live in its own schema; no service reads another's tables.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import DateTime, MetaData, Table, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Mapped, mapped_column

from wemcp.common.errors import ConfigError
from wemcp.common.outbox import OutboxTables, outbox_tables
from wemcp.common.probes import probe_table

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def service_metadata(schema: str) -> MetaData:
    """Metadata whose tables live in ``schema``. Declare a service's base as::

        class Base(DeclarativeBase):
            metadata = service_metadata("catalog")

    (a class statement, which type checkers understand as a base class), then its bus tables with
    :func:`service_bus_tables`."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def service_bus_tables(metadata: MetaData) -> tuple[OutboxTables, Table]:
    """The tables every service with events keeps in its schema, declared on its base's metadata::

        bus_tables, probe_receipts = service_bus_tables(Base.metadata)

    the outbox's (``outbox``, ``processed_events``, ``dead_letters``) and the bus canaries'
    ``probe_receipts`` (``ServiceSpec(tables=bus_tables, probe_receipts=probe_receipts)``)."""
    return outbox_tables(metadata), probe_table(metadata)


def timestamp_now(*, onupdate: bool = False) -> Mapped[datetime]:
    """A ``timestamptz NOT NULL DEFAULT now()`` column (``created_at``; ``updated_at`` kept by the code,
    or with ``onupdate=True`` set to ``now()`` by every ORM update of the row)."""
    if onupdate:
        return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now())
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


def uuid_pk() -> Mapped[uuid.UUID]:
    """A ``uuid PRIMARY KEY`` column, a fresh ``uuid4`` when the code leaves it unset."""
    return mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)


def to_async_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return url if scheme == "postgresql+asyncpg" else f"postgresql+asyncpg://{rest}"


def make_engine(url: str, *, pool_size: int = 10, pre_ping: bool = True, **kwargs: Any) -> AsyncEngine:
    """The service's pool. ``pre_ping`` (the default) tests each connection at checkout, one round
    trip, so a request never meets a connection a database restart has closed; a caller that retries
    a read on a closed connection itself (the catalog's search) may leave it off."""
    return create_async_engine(
        to_async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        **kwargs,
    )


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def check_database(engine: AsyncEngine, timeout: float) -> None:  # noqa: ASYNC109
    """Fail fast, with one line naming DATABASE_URL, when the database cannot be reached."""
    where = _where(str(engine.url))
    try:
        async with asyncio.timeout(timeout):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except TimeoutError:
        raise ConfigError(f"DATABASE_URL: no answer from {where} within {timeout:g} s") from None
    except Exception as exc:  # the driver raises many types; the line must name the setting
        raise ConfigError(f"DATABASE_URL: cannot connect to {where}: {_first_line(exc)}") from None


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session inside one transaction: committed on success, rolled back on error."""
    async with factory() as session, session.begin():
        yield session


def _where(url: str) -> str:
    parts = urlsplit(url.replace("+asyncpg", ""))
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


def _first_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return (msg[0] if msg else type(exc).__name__)[:300]
