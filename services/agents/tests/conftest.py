"""Fixtures of the agents tests: the whole path on loopback — the real gateway (identity verified
from JWTs we mint) → the agents service → a scripted OpenAI-compatible model server, and MCP calls →
a stand-in for the gateway's MCP router → ``mcp-server-time`` over stdio."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from services.agents.tests.agents_testkit import (
    EXTERNAL_KEY,
    RUN_SECRET,
    Jwks,
    McpRouter,
    StdioUpstream,
    TcpProxy,
    external_server,
    install_time_server,
    router_app,
    tmpdir,
)
from wemcp.agents.config import Settings
from wemcp.agents.main import SPEC
from wemcp.common.service import running
from wemcp.devstack.testing import serve_app
from wemcp.gateway.config import Settings as GatewaySettings
from wemcp.gateway.main import SPEC as GATEWAY
from wemcp.quota.client import QuotaClient
from wemcp.quota.policy import StaticPolicies
from wemcp.testkit.model import ScriptedModel

PROVIDER_SECRET = "provider-key-secret-for-tests-0123"


@pytest.fixture(scope="session")
def time_exe() -> Path:
    return install_time_server(tmpdir("wemcp-agents-time-") / "venv")


@pytest_asyncio.fixture(scope="session")
async def time_upstream(time_exe: Path) -> AsyncIterator[StdioUpstream]:
    up = StdioUpstream(str(time_exe), ["--local-timezone", "UTC"])
    await up.start()
    try:
        yield up
    finally:
        await up.stop()


@dataclass
class Platform:
    gateway: str  # base URL of the real gateway
    agents: str  # base URL of the agents service itself
    external: str  # an MCP server wanting X-Api-Key
    model: ScriptedModel
    router: McpRouter
    upstream: StdioUpstream
    proxy: TcpProxy  # between the agents service and the router: the agents' MCP connections
    jwks: Jwks
    http: httpx.AsyncClient
    app: Any
    user_id: uuid.UUID = field(default_factory=uuid.uuid4)
    admin_id: uuid.UUID = field(default_factory=uuid.uuid4)
    model_url: str = ""
    _user_token: str = ""

    def auth(self, user_id: uuid.UUID | None = None, role: str = "user") -> dict[str, str]:
        if user_id is None and role == "user":
            return {"Authorization": f"Bearer {self.user_token}"}
        return {"Authorization": f"Bearer {self.jwks.token(user_id or self.user_id, role)}"}

    @property
    def user_token(self) -> str:
        if not self._user_token:
            self._user_token = self.jwks.token(self.user_id)
        return self._user_token

    @property
    def admin(self) -> dict[str, str]:
        return self.auth(self.admin_id, "admin")

    async def add_provider(self, name: str = "local", base_url: str | None = None,
                           models: list[str] | None = None, api_key: str | None = "sk-test-provider-key") -> dict:
        r = await self.http.post("/api/v1/model-providers", headers=self.admin, json={
            "name": name, "base_url": base_url or self.model_url, "models": models or ["scripted-1"],
            **({"api_key": api_key} if api_key else {})})
        assert r.status_code == 201, r.text
        return r.json()


@pytest_asyncio.fixture
async def platform(request, settings_for, infra, clean_db, clean_redis, time_upstream,
                   monkeypatch) -> AsyncIterator[Platform]:
    """The whole path; agents settings can be overridden per test with
    ``@pytest.mark.parametrize("platform", [{...}], indirect=True)``."""
    model, jwks = ScriptedModel(), Jwks()
    redis = Redis.from_url(infra.redis_url)
    # the quota's Redis bound (0.25 s in production, where a slow Redis should fail fast) is wider
    # here: make test shares 2 cores between two workers, and these tests count calls, not time
    monkeypatch.setenv("WEMCP_RATELIMIT_REDIS_TIMEOUT_SECONDS", "2")
    quota = QuotaClient(redis, StaticPolicies(), run_context_secret=RUN_SECRET, timeout=2.0)
    router = McpRouter(time_upstream, quota)
    async with (
        serve_app(model.app()) as model_url,
        serve_app(router_app(router), lifespan="on") as router_url,
        serve_app(external_server(EXTERNAL_KEY), lifespan="on") as external_url,
        serve_app(jwks.app()) as jwks_url,
    ):
        proxy = TcpProxy(int(router_url.rsplit(":", 1)[1]))
        proxy_url = await proxy.start()
        settings = settings_for(Settings, gateway_url=proxy_url, agent_run_secret=RUN_SECRET,
                                provider_key_secret=PROVIDER_SECRET,
                                provider_timeout_seconds=3.0, mcp_timeout_seconds=10.0,
                                # server_url servers of the tests are on loopback (WEMCP_EGRESS_ALLOW)
                                **{"egress_allow": "127.0.0.1", **getattr(request, "param", {})})
        try:
            async with running(SPEC, settings) as app, serve_app(app) as agents_url:
                gw_settings = settings_for(GatewaySettings, auth_url=jwks_url, agents_url=agents_url)
                async with running(GATEWAY, gw_settings) as gw, serve_app(gw) as gw_url, \
                        httpx.AsyncClient(base_url=gw_url, timeout=30) as http:
                    p = Platform(gw_url, agents_url, external_url + "/mcp", model, router, time_upstream, proxy,
                                 jwks, http, app, model_url=model_url + "/v1")
                    try:
                        yield p
                    finally:
                        time_upstream.calls.clear()
        finally:
            await proxy.stop()
    await redis.aclose()
