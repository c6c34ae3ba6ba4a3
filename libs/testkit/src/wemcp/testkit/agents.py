"""The agents service on its whole path, as its tests and the security tests (``tests/security``) use
it: the ``platform`` fixture — the real gateway (identity verified from JWTs we mint) → the agents
service → a scripted OpenAI-compatible model server, and MCP calls → a stand-in for the gateway's MCP
router → ``mcp-server-time`` over stdio — and ``time_upstream`` / ``time_exe`` under it. A conftest
that needs them imports them (``from wemcp.testkit.agents import platform, time_exe, time_upstream``).

The test doubles for what the platform cannot reach, each a real protocol server on loopback:

- the model, an OpenAI-compatible server that makes real tool calls decided from the conversation,
  is :class:`wemcp.testkit.model.ScriptedModel` (shared with the benchmarks).
- :class:`StdioUpstream`: a real MCP server over stdio (``mcp-server-time`` from PyPI) held open by
  a task of its own.
- :class:`McpRouter`: stands in for the gateway's ``/mcp/{slug}`` router (being built elsewhere):
  it proxies to the stdio upstream, records what the agents service sent, verifies the signed run
  context and asks the real ratelimit quota client whether the call counts.
- :class:`TcpProxy`: a TCP relay in front of the router that counts connections and can turn the
  open ones into dead keep-alive connections.
- :func:`external_server`: an MCP server (MCPServer, Streamable HTTP) that wants an API key header,
  for Responses-style ``server_url`` tools.
- :class:`Jwks`: the auth service's JWKS endpoint, so the real gateway verifies tokens we mint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import jwt
import mcp.types as types
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from mcp import Client, StdioServerParameters
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from wemcp.agents.config import Settings
from wemcp.agents.main import SPEC
from wemcp.common.service import running
from wemcp.devstack.testing import serve_app
from wemcp.gateway.config import Settings as GatewaySettings
from wemcp.gateway.main import SPEC as GATEWAY
from wemcp.gateway.replicas import replay
from wemcp.quota.client import QuotaClient
from wemcp.quota.policy import StaticPolicies
from wemcp.testkit.model import ScriptedModel

REPO = Path(__file__).resolve().parents[5]
TIME_VERSION = "2026.10.19"
# the key the external (server_url) MCP server in the tests demands
EXTERNAL_KEY = "calc-key-1234"
# shared by the agents service and the router's quota client in the tests
RUN_SECRET = "agent-run-secret-for-tests-0123456789"  # noqa: S105 (a test value)
PROVIDER_SECRET = "provider-key-secret-for-tests-0123"  # noqa: S105 (a test value)


# -- a real MCP server over stdio ----------------------------------------------------------------------
def install_time_server(dest: Path) -> Path:
    uv = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    subprocess.run([uv, "venv", "-q", str(dest)], check=True, capture_output=True, timeout=120)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(dest / "bin" / "python"), f"mcp-server-time=={TIME_VERSION}"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    exe = dest / "bin" / "mcp-server-time"
    assert exe.exists(), "mcp-server-time did not install"
    return exe


class StdioUpstream:
    """One stdio MCP client, opened and closed by its own task (anyio scopes stay in one task)."""

    def __init__(self, command: str, args: list[str]) -> None:
        self.params = StdioServerParameters(command=command, args=args)
        self.client: Client | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.calls: list[str] = []

    async def start(self) -> None:
        self._task = asyncio.create_task(self._hold())
        await asyncio.wait_for(self._ready.wait(), 60)
        if self._error:
            raise self._error

    async def _hold(self) -> None:
        try:
            async with Client(self.params) as client:
                self.client = client
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def stop(self) -> None:
        self._stop.set()
        if self._task:
            await self._task


# -- the gateway's MCP router, as the agents service sees it ---------------------------------------------
class McpRouter:
    """``/mcp/{slug}``: the slugs in ``slugs`` (``time``; a test may add more) proxy to the stdio
    upstream; anything else is 404 like an unknown slug, and a slug in ``disabled`` is 403 like a
    disabled server. For every ``tools/call`` it records the headers, the slug and the quota decision
    made with the real ratelimit client (``in_agent_run_token`` = the ``X-WeMcp-Agent-Run`` header) in
    ``seen``; every request at all goes to ``requests``."""

    def __init__(self, upstream: StdioUpstream, quota: Any) -> None:
        self.upstream = upstream
        self.quota = quota
        self.seen: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.disabled: set[str] = set()
        self.slugs: set[str] = {"time"}
        server: Server[Any] = Server("router-time", on_list_tools=self._list, on_call_tool=self._call)
        self.manager = StreamableHTTPSessionManager(
            app=server,
            json_response=True,
            stateless=True,
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )

    async def _list(self, ctx: Any, params: Any) -> types.ListToolsResult:
        assert self.upstream.client is not None
        return await self.upstream.client.list_tools()

    async def _call(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        assert self.upstream.client is not None
        self.upstream.calls.append(params.name)
        return await self.upstream.client.call_tool(params.name, params.arguments or {})

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        async with self.manager.run():
            yield


def _subject(authorization: str | None) -> str | None:
    """The user a ``Bearer <JWT>`` names (signature not checked: the stand-in trusts the test's tokens)."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return None
    try:
        return str(jwt.decode(authorization[7:], options={"verify_signature": False})["sub"])
    except (jwt.PyJWTError, KeyError):
        return None


class _RouterEndpoint:
    def __init__(self, router: McpRouter) -> None:
        self.router = router

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        r = self.router
        request = Request(scope, receive)
        slug = scope["path_params"]["slug"]
        body = await request.body()
        try:
            msg = json.loads(body) if body else {}
        except ValueError:
            msg = {}
        method = msg.get("method") if isinstance(msg, dict) else None
        # the real gateway takes the caller from the credential only; this stand-in reads the token's subject
        user = _subject(request.headers.get("authorization"))
        r.requests.append(
            {
                "slug": slug,
                "http": scope["method"],
                "method": method,
                "user": user,
                "authorization": request.headers.get("authorization"),
                "run_token": request.headers.get("x-wemcp-agent-run"),
                "upstream_key": request.headers.get("x-upstream-authorization"),
                "version": request.headers.get("mcp-protocol-version"),
                "port": scope["client"][1] if scope.get("client") else None,
            }
        )
        refusal = (
            (404, "Not Found", f"no server {slug!r}")
            if slug not in r.slugs
            else (403, "Forbidden", f"the server {slug!r} is disabled")
            if slug in r.disabled
            else None
        )
        if refusal is not None:
            status, title, detail = refusal
            await JSONResponse(
                {"title": title, "status": status, "detail": detail},
                status_code=status,
                media_type="application/problem+json",
            )(scope, receive, send)
            return
        if isinstance(msg, dict) and msg.get("method") == "tools/call":
            token = request.headers.get("x-wemcp-agent-run")
            decision = await r.quota.decide(user, "server", slug, "system", in_agent_run_token=token)
            r.seen.append(
                {
                    "user": user,
                    "authorization": request.headers.get("authorization"),
                    "run_token": token,
                    "tool": msg["params"]["name"],
                    "reason": decision.reason,
                    "counted": decision.counted,
                    "port": r.requests[-1]["port"],
                    "slug": slug,
                }
            )
            if not decision.allowed:
                await JSONResponse(decision.problem(), status_code=429)(scope, receive, send)
                return
        await r.manager.handle_request(scope, replay(body, receive), send)


def router_app(router: McpRouter) -> Starlette:
    return Starlette(
        routes=[Route("/mcp/{slug}", _RouterEndpoint(router), methods=["GET", "POST", "DELETE"])],
        lifespan=router.lifespan,
    )


class TcpProxy:
    """A TCP relay to ``127.0.0.1:<port>``. ``accepted`` counts the connections clients opened and
    ``open`` those still open. :meth:`kill_idle` turns every open connection into a dead one that the
    client cannot tell from a live one: it stays open, but the next request on it is swallowed and
    the connection closed without an answer — what a keep-alive connection looks like after the
    server or a middlebox dropped it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.accepted = 0
        self.open = 0
        self.swallowed = 0
        self.dead_on_arrival = False  # new connections are dead from the start
        self._dead: set[Any] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def kill_idle(self) -> None:
        self._dead.update(self._writers)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self._writers.add(writer)
        if self.dead_on_arrival:
            self._dead.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            writer.close()
            self.open -= 1
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, from_client: bool) -> None:
            try:
                while data := await src.read(65536):
                    if from_client and writer in self._dead:
                        self.swallowed += 1
                        return
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                for w in (writer, up_writer):
                    w.close()

        try:
            await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        finally:
            self._writers.discard(writer)
            self._dead.discard(writer)
            self.open -= 1

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()


# -- an external MCP server for server_url tools --------------------------------------------------------
def calc_app(name: str, **http: Any) -> Any:
    """An MCP server called ``name`` with one tool, ``add``, as a Streamable HTTP app at ``/mcp`` that
    answers in JSON (``http``: more of the app's options)."""
    srv = MCPServer(name)

    @srv.tool()
    def add(a: int, b: int) -> str:
        """Add two integers."""
        return str(a + b)

    return srv.streamable_http_app(
        streamable_http_path="/mcp",
        json_response=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        **http,
    )


def external_server(api_key: str) -> Any:
    inner = calc_app("calc", stateless_http=True)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"x-api-key", b"").decode() != api_key:
            await JSONResponse({"error": "bad key"}, status_code=401)(scope, receive, send)
            return
        await inner(scope, receive, send)

    return app


# -- identity: the auth service's JWKS, so the real gateway verifies our tokens -------------------------
class Jwks:
    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.kid = "test-" + uuid.uuid4().hex[:6]

    def app(self) -> Starlette:
        jwk = json.loads(OKPAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "alg": "EdDSA", "use": "sig"})

        async def jwks(request: Request) -> JSONResponse:
            return JSONResponse({"keys": [jwk]})

        return Starlette(routes=[Route("/internal/auth/jwks", jwks)])

    def token(self, user_id: uuid.UUID, role: str = "user", login: str = "tester") -> str:
        now = int(time.time())
        return jwt.encode(
            {
                "sub": str(user_id),
                "role": role,
                "login": login,
                "iss": "wemcp",
                "aud": "wemcp",
                "iat": now,
                "exp": now + 3600,
            },
            self.key,
            algorithm="EdDSA",
            headers={"kid": self.kid},
        )


def tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


# -- the fixtures ---------------------------------------------------------------------------------------
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

    async def add_provider(
        self,
        name: str = "local",
        base_url: str | None = None,
        models: list[str] | None = None,
        api_key: str | None = "sk-test-provider-key",
    ) -> dict:
        r = await self.http.post(
            "/api/v1/model-providers",
            headers=self.admin,
            json={
                "name": name,
                "base_url": base_url or self.model_url,
                "models": models or ["scripted-1"],
                **({"api_key": api_key} if api_key else {}),
            },
        )
        assert r.status_code == 201, r.text
        return r.json()


@pytest_asyncio.fixture
async def platform(
    request, settings_for, infra, clean_db, clean_redis, time_upstream, monkeypatch
) -> AsyncIterator[Platform]:
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
        settings = settings_for(
            Settings,
            gateway_url=proxy_url,
            agent_run_secret=RUN_SECRET,
            provider_key_secret=PROVIDER_SECRET,
            provider_timeout_seconds=3.0,
            mcp_timeout_seconds=10.0,
            # server_url servers of the tests are on loopback (WEMCP_EGRESS_ALLOW)
            **{"egress_allow": "127.0.0.1", **getattr(request, "param", {})},
        )
        try:
            async with running(SPEC, settings) as app, serve_app(app) as agents_url:
                gw_settings = settings_for(GatewaySettings, auth_url=jwks_url, agents_url=agents_url)
                async with (
                    running(GATEWAY, gw_settings) as gw,
                    serve_app(gw) as gw_url,
                    httpx.AsyncClient(base_url=gw_url, timeout=30) as http,
                ):
                    p = Platform(
                        gw_url,
                        agents_url,
                        external_url + "/mcp",
                        model,
                        router,
                        time_upstream,
                        proxy,
                        jwks,
                        http,
                        app,
                        model_url=model_url + "/v1",
                    )
                    try:
                        yield p
                    finally:
                        time_upstream.calls.clear()
        finally:
            await proxy.stop()
    await redis.aclose()
