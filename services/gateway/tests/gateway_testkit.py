"""Helpers and fixtures of the gateway's MCP router tests (conftest.py registers the fixtures; tests
import helpers from here, never from a bare ``conftest``, which in a full run resolves to another
directory's conftest): the gateway on a loopback port (real NATS, Redis),
real upstream MCP servers (tests/upstream.py), an injected verifier, and a loopback stand-in for
auth's internal vault/connection API."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import orjson
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from wemcp.common.errors import Unauthorized
from wemcp.common.events.servers import Endpoint, ServerDeployed, ServerDisabled, ServerEnabled, ServerSubmitted
from wemcp.common.identity import Identity
from wemcp.common.service import Runtime, build_app
from wemcp.common.trust import HEADER_ASSERTION, InvalidAssertion, Verifier, environment_ring
from wemcp.devstack.testing import serve_app
from wemcp.gateway.config import Settings
from wemcp.gateway.main import SPEC
from wemcp.testkit.upstream import serve_upstream

USERS = {"alice": uuid.UUID("00000000-0000-0000-0000-00000000a11c"),
         "bob": uuid.UUID("00000000-0000-0000-0000-000000000b0b")}


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer test-{user}"}


async def fake_verifier(request: Request) -> Identity | None:
    """Stands in for auth's Verifier: ``Bearer test-<user>``; anything else is a 401."""
    auth = request.headers.get("authorization") or ""
    key = request.query_params.get("key")
    token = auth.removeprefix("Bearer ").strip() if auth else key
    if not token:
        return None
    name = token.removeprefix("test-")
    if not token.startswith("test-") or name not in USERS:
        raise Unauthorized("invalid credentials")
    return Identity(user_id=USERS[name], role="user", login=name)


class FakeAuth:
    """Auth's internal API as the gateway calls it: vault values and OAuth connections, only for
    the platform's service credential (as auth's runtime enforces)."""

    def __init__(self) -> None:
        self.vault: dict[tuple[str, str], dict[str, str]] = {}
        self.calls = 0
        self.refused = 0  # calls without a valid service assertion
        self._verifier = Verifier(environment_ring(), "auth")

    def _platform(self, request: Request) -> bool:
        try:
            self._verifier.verify(request.headers.get(HEADER_ASSERTION, ""))
        except InvalidAssertion:
            self.refused += 1
            return False
        return True

    def app(self) -> Starlette:
        async def vault(request: Request) -> JSONResponse:
            self.calls += 1
            if not self._platform(request):
                return JSONResponse({"detail": "service credential missing"}, status_code=401)
            key = (request.path_params["user_id"], request.query_params.get("server", ""))
            return JSONResponse({"values": self.vault.get(key, {})})

        async def connection(request: Request) -> JSONResponse:
            self.calls += 1
            if not self._platform(request):
                return JSONResponse({"detail": "service credential missing"}, status_code=401)
            return JSONResponse({"detail": "no connection"}, status_code=404)

        return Starlette(routes=[Route("/internal/auth/vault/{user_id}", vault),
                                 Route("/internal/auth/connections/{user_id}/{slug}", connection)])


class Stack:
    """The gateway under test. With several replicas (``{"replicas": 2}``), ``url`` is a loopback
    round-robin balancer in front of them (tests/balancer.py), ``runtime``/``mcp`` the first replica's
    and ``runtimes``/``mcps`` all of them; routes are awaited on every replica."""

    def __init__(self, url: str, runtime: Runtime, nc: Any, auth: FakeAuth, runtimes: list[Runtime] | None = None,
                 balancer: Any = None) -> None:
        self.url, self.runtime, self.nc, self.auth = url, runtime, nc, auth
        self.runtimes = runtimes or [runtime]
        self.balancer = balancer

    @property
    def mcp(self) -> Any:
        return self.runtime.extras["mcp"]

    @property
    def mcps(self) -> list[Any]:
        return [r.extras["mcp"] for r in self.runtimes]

    async def publish(self, event: Any) -> None:
        js = self.nc.jetstream()
        await js.publish(event.subject, event.model_dump_json().encode(), stream=event.stream,
                         headers={"Nats-Msg-Id": str(event.event_id)})

    async def deploy(self, slug: str, url: str, *, spec: dict[str, Any] | None = None,
                     versions: list[str] | None = None) -> uuid.UUID:
        sid = uuid.uuid4()
        await self.publish(ServerSubmitted(server_id=sid, slug=slug, name=f"io.test/{slug}",
                                           spec=spec or {"packages": [], "remotes": []}))
        await self.publish(ServerDeployed(server_id=sid, slug=slug, endpoints=[Endpoint(url=url)],
                                          protocol_versions=versions or []))
        await self.wait_route(slug, lambda r: r.routable)
        return sid

    async def disable(self, slug: str) -> None:
        route = self.mcp.routes.get(slug)
        await self.publish(ServerDisabled(server_id=uuid.UUID(route.server_id), slug=slug))

    async def enable(self, slug: str) -> None:
        route = self.mcp.routes.get(slug)
        await self.publish(ServerEnabled(server_id=uuid.UUID(route.server_id), slug=slug))

    async def wait_route(self, slug: str, pred: Callable[[Any], bool], timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            routes = [m.routes.get(slug) for m in self.mcps]
            if all(r is not None and pred(r) for r in routes):
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"route {slug} did not reach the expected state")


@contextlib.asynccontextmanager
async def open_stack(param: dict[str, Any], settings_for: Any, infra: Any) -> AsyncIterator[Stack]:
    """The gateway (``param["replicas"]`` of them, default 1) on loopback with ``param``'s settings."""
    from wemcp.devstack.infra import free_port

    param = dict(param)
    replicas = int(param.pop("replicas", 1))
    fake = FakeAuth()
    async with serve_app(fake.app()) as auth_url, contextlib.AsyncExitStack() as stack:
        nc = await nats.connect(infra.nats_url)
        js = nc.jetstream()
        with contextlib.suppress(Exception):
            await js.delete_key_value("wemcp_gateway_routes")
        overrides = {"key_cache_ttl_seconds": 30.0, "mcp_body_timeout_seconds": 2.0, "mcp_keepalive_seconds": 0.5,
                     "route_replay_wait_seconds": 2.0,
                     "system_keys": '{"keyed": {"API_KEY": "system-key-0001"}}', **param}
        runtimes: list[Runtime] = []
        urls: list[str] = []
        balancer = None
        try:
            for _ in range(replicas):
                port = free_port()
                peer = {"peer_url": f"http://127.0.0.1:{port}"} if replicas > 1 else {}
                settings = settings_for(Settings, port=0, auth_url=auth_url, **peer, **overrides)
                runtime = Runtime(SPEC, settings)
                runtimes.append(runtime)
                await runtime.open()
                runtime.extras["gateway"].verifier = fake_verifier
                # The test clients, the upstreams and the gateway share this one event loop: a quota
                # decision waits for the loop as much as for Redis, and on a loaded 2-core runner the
                # production bound (0.25 s, then fail closed) measured the harness, not Redis — one relay
                # test failed that way.
                quota = runtime.extras["mcp"].quota
                if quota is not None:
                    quota.timeout = 5.0
                urls.append(await stack.enter_async_context(serve_app(build_app(SPEC, runtime), port=port)))
            if replicas > 1:
                from services.gateway.tests.balancer import RoundRobin

                balancer = RoundRobin(urls)
                url = await stack.enter_async_context(serve_app(balancer))
            else:
                url = urls[0]
            yield Stack(url, runtimes[0], nc, fake, runtimes, balancer)
        finally:
            await stack.aclose()
            if balancer is not None:
                await balancer.close()
            for runtime in runtimes:
                await runtime.close()
            await nc.close()


@pytest_asyncio.fixture
async def stack(request, settings_for, clean_bus, clean_redis, infra) -> AsyncIterator[Stack]:
    """The gateway on loopback; its settings can be overridden per test with
    ``@pytest.mark.parametrize("stack", [{...}], indirect=True)`` (``{"replicas": 2}``: two gateways
    behind a round-robin balancer)."""
    async with open_stack(getattr(request, "param", {}), settings_for, infra) as s:
        yield s


@pytest_asyncio.fixture
async def both_upstream() -> AsyncIterator[str]:
    async with serve_upstream("both") as url:
        yield url


@pytest_asyncio.fixture
async def legacy_upstream() -> AsyncIterator[str]:
    async with serve_upstream("legacy") as url:
        yield url


def text_of(result: Any) -> str:
    return result.content[0].text


def loads(b: bytes | str) -> Any:
    return orjson.loads(b)


@contextlib.asynccontextmanager
async def mcp_client(url: str, headers: dict[str, str] | None = None, mode: str = "auto",
                     **options: Any) -> AsyncIterator[Any]:
    """The official client with extra HTTP headers (credentials, X-WeMcp-Env-*); ``options`` go to
    ``Client`` (sampling/elicitation/roots/logging callbacks ...)."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers=headers or {}, timeout=httpx2.Timeout(30.0, read=60.0)) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode, **options) as c:
            yield c


async def set_quota(stack: Stack, server_daily: int | None) -> None:
    """Replace the live policies with fixed ones (None: no quota client at all)."""
    from wemcp.quota.policy import StaticPolicies

    for mcp in stack.mcps:  # every replica
        quota = mcp.quota
        closer = getattr(quota.policies, "aclose", None)
        if closer is not None:
            await closer()
        if server_daily is None:
            mcp.quota = None
        else:
            quota.policies = StaticPolicies(server_daily=server_daily)
