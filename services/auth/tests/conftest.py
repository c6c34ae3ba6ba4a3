"""Fixtures of the auth tests: the loopback OAuth provider, the auth service in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import pytest
import pytest_asyncio

from wemcp.auth.config import Settings
from wemcp.auth.main import SPEC
from wemcp.common.sealing import Keyring
from wemcp.common.service import running
from wemcp.devstack.infra import free_port
from wemcp.devstack.testing import serve_app
from wemcp.testkit.auth import LoopbackProvider


@pytest_asyncio.fixture
async def provider() -> AsyncIterator[LoopbackProvider]:
    p = LoopbackProvider()
    port = free_port()
    async with serve_app(p.app(), port) as url:
        p.base_url = url
        p.profile = {
            "login": "octocat",
            "id": 583231,
            "avatar_url": "https://avatars.example/u/583231",
            "name": "The Octocat",
            "email": "octocat@example.com",
        }
        yield p


KEKS = f"{Keyring.generate_spec('k1')},{Keyring.generate_spec('k2')}"


@pytest.fixture
def auth_settings(settings_for, provider, tmp_path) -> Settings:
    return settings_for(
        Settings,
        keks=KEKS,
        active_kek="k1",
        dev_kek_file=str(tmp_path / "kek"),
        public_url="http://wemcp.test",
        github=provider.config(pkce=True),
        gitee=provider.config(pkce=False),
        google=provider.config(pkce=True, google=True),
        login_failures_allowed=5,
        connection_refresh_margin_seconds=120,
        egress_allow="127.0.0.1",  # the loopback OAuth provider (WEMCP_EGRESS_ALLOW)
    )


@pytest_asyncio.fixture
async def auth_app(auth_settings, clean_db, clean_bus, clean_redis) -> AsyncIterator[Any]:
    async with running(SPEC, auth_settings) as app:
        yield app


@pytest_asyncio.fixture
async def client(auth_app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=auth_app), base_url="http://wemcp.test"
    ) as c:
        yield c
