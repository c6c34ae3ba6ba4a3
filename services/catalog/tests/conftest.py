from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx2 as httpx
import pytest_asyncio

from services.catalog.tests.catalog_helpers import OTHER, USER, stand_in_registries, trust
from wemcp.catalog.config import Settings
from wemcp.catalog.main import SPEC
from wemcp.common.service import running

# what the stand-in registries know (unpinned submissions of the catalog tests resolve against them)
KNOWN = {"npm:@acme/weather-mcp": "1.4.0", "npm:@baidumap/mcp-server-baidu-map": "1.0.5",
         "pypi:mcp-server-time": "2026.10.19", "pypi:acme-maps-mcp": "2.1.0"}


@pytest_asyncio.fixture
async def registries() -> AsyncIterator[Any]:
    async with stand_in_registries(**KNOWN) as reg:
        yield reg


@pytest_asyncio.fixture
async def catalog(settings_for: Any, clean_db: None, clean_bus: None,
                  registries: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The catalog service in-process (HTTP, consumers, relay) on the real infrastructure; unpinned
    packages resolve against loopback stand-ins of the npm registry and PyPI (no cache: each
    submission asks). The per-user submission limits are lifted: these tests submit many servers as
    one user, and the limits have tests of their own (test_service_limits.py). ``USER`` and ``OTHER`` are
    trusted publishers (their submissions deploy without review)."""
    settings = settings_for(Settings, egress_allow="127.0.0.1",  # OpenAPI documents and registries on loopback
                            npm_registry=registries.npm_url, pypi_url=registries.pypi_url, resolve_cache_seconds=0,
                            max_submissions_per_hour=10_000, max_deployments_in_flight=10_000)
    async with running(SPEC, settings) as app:
        await trust(app, USER, OTHER)  # the review queue has tests of its own (test_review.py)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://catalog") as client:
            yield app, client


@pytest_asyncio.fixture
async def scratch_db(infra: Any) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A database of its own in the test Postgres, with the extensions the catalog needs, for the
    migration tests (they migrate it to a revision before, write rows as the old code left them,
    migrate to head): its URL and a connection to it. Dropped afterwards."""
    base = "postgresql://" + infra.database_url.split("://", 1)[1]
    name = f"migr_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = base.rsplit("/", 1)[0] + f"/{name}"
    try:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector; CREATE EXTENSION IF NOT EXISTS pg_trgm;")
            yield url, conn
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
