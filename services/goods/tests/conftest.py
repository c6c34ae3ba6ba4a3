from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import pytest_asyncio

from wemcp.common.service import running
from wemcp.goods.config import Settings
from wemcp.goods.main import SPEC


@pytest_asyncio.fixture
async def goods(settings_for: Any, clean_db: None, clean_bus: None) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The goods service in-process (HTTP, consumers, relay) on the real infrastructure. No catalog
    to refresh copy from (``server.updated`` then only moves ``refreshed_at``)."""
    async with running(SPEC, settings_for(Settings, catalog_url=None)) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://goods") as client:
            yield app.state.runtime, client
