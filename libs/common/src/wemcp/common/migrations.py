"""Alembic glue: every service keeps its migrations in its package (``wemcp/<svc>/migrations``) and
its tables in its own schema, with its own ``alembic_version`` table in that schema.

``env.py`` of a service is two lines: import its metadata and call :func:`run_env`.
:func:`upgrade` runs one service's migrations programmatically (``wemcp-dev migrate`` calls it).
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import MetaData, pool, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import create_async_engine

from wemcp.common.db import to_async_url


def alembic_config(service: str, database_url: str) -> Config:
    script_location = resources.files(f"wemcp.{service}") / "migrations"
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", to_async_url(database_url).replace("%", "%%"))
    return cfg


def upgrade(service: str, database_url: str, revision: str = "head") -> None:
    """Blocking; call it from a thread when an event loop is running."""
    command.upgrade(alembic_config(service, database_url), revision)


async def upgrade_async(service: str, database_url: str, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, service, database_url, revision)


def run_env(metadata: MetaData) -> None:
    """The body of every service's ``migrations/env.py``."""
    schema = metadata.schema
    assert schema, "service metadata must name its schema"
    url = context.config.get_main_option("sqlalchemy.url")
    assert url
    opts: dict[str, Any] = dict(
        target_metadata=metadata,
        version_table_schema=schema,
        include_schemas=True,
        include_name=lambda name, type_, parent: type_ != "schema" or name == schema,
        compare_type=True,
    )
    if context.is_offline_mode():
        context.configure(url=url, literal_binds=True, **opts)
        with context.begin_transaction():
            context.run_migrations()
        return

    async def online() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        try:
            async with engine.connect() as conn:
                # Serialise concurrent migrators (two processes starting at once) per schema.
                await conn.execute(text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": f"wemcp-migrate-{schema}"})
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                await conn.commit()

                def do(sync_conn: sa.Connection) -> None:
                    context.configure(connection=sync_conn, **opts)
                    with context.begin_transaction():
                        context.run_migrations()

                await conn.run_sync(do)
                await conn.commit()
                await conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": f"wemcp-migrate-{schema}"})
        finally:
            await engine.dispose()

    asyncio.run(online())


def create_bus_tables(schema: str) -> None:
    """Migration helper: the outbox, processed-events and dead-letter tables of one schema
    (the same shape :func:`wemcp.common.outbox.outbox_tables` declares)."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("headers", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("event_id", name="uq_outbox_event_id"),
        schema=schema,
    )
    op.create_index("ix_outbox_pending", "outbox", ["id"], schema=schema,
                    postgresql_where=sa.text("published_at IS NULL"))
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.String(120), nullable=False),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("consumer", "event_id", name="pk_processed_events"),
        schema=schema,
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger, autoincrement=True),
        sa.Column("consumer", sa.String(120), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
        schema=schema,
    )


def create_probe_receipts(schema: str) -> None:
    """The table behind the bus canaries (:mod:`wemcp.common.probes`)."""
    op.create_table(
        "probe_receipts",
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("note", sa.String(200), nullable=False, server_default=""),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("handled_by_pid", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_probe_receipts"),
        schema=schema,
    )


def drop_bus_tables(schema: str) -> None:
    op.drop_table("dead_letters", schema=schema)
    op.drop_table("processed_events", schema=schema)
    op.drop_index("ix_outbox_pending", "outbox", schema=schema)
    op.drop_table("outbox", schema=schema)
