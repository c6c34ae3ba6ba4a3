from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest_asyncio

from wemcp.common.service import running

sys.path.insert(0, str(Path(__file__).parent))  # catalog_helpers (pytest runs in importlib mode)
from wemcp.catalog.config import Settings
from wemcp.catalog.main import SPEC


@pytest_asyncio.fixture
async def catalog(settings_for: Any, clean_db: None, clean_bus: None) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The catalog service in-process (HTTP, consumers, relay) on the real infrastructure."""
    settings = settings_for(Settings, egress_allow="127.0.0.1")  # OpenAPI documents served on loopback
    async with running(SPEC, settings) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://catalog") as client:
            yield app, client
