"""One address policy (issue 13, item 5): one test per attack on what the platform fetches for a
user, and on the headers it sends upstream. Each goes through the real call path: the catalog's
submission endpoint, the gateway's MCP router (test kit: real NATS and Redis), the agents service
behind the real gateway (``wemcp.testkit.agents``, through conftest.py), the auth service's OAuth login.

DNS without DNS: names under ``.test`` are answered by a stand-in for ``socket.getaddrinfo`` (what
asyncio's resolver and every client here call), so a name can answer a public address to a check
and the loopback to the connect that follows — DNS rebinding, as an attacker's name server does it.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2 as httpx
import pytest

import services.gateway.tests.gateway_testkit as kit
from services.catalog.tests import catalog_helpers
from services.gateway.tests.gateway_testkit import Stack, bearer, mcp_client, text_of
from wemcp.common.events.servers import ServerSubmitted
from wemcp.common.service import running
from wemcp.devstack.testing import serve_app
from wemcp.testkit.upstream import build_server

stack = kit.stack  # the gateway kit's fixture

PUBLIC = "93.184.215.14"  # what the attacker's name answers first (any global address)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests name metadata and shared addresses on purpose. Should the policy ever let one
    through again, the connect must not leave the machine: any socket connect to an address outside
    loopback fails here (as a refused connection) instead of sending a packet."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def allowed(address: Any) -> bool:
        host = address[0] if isinstance(address, tuple) else None
        if host is None:  # unix sockets
            return True
        import ipaddress

        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return False

    def connect(self: socket.socket, address: Any) -> None:
        if not allowed(address):
            raise ConnectionRefusedError(f"test guard: no connection outside loopback ({address[0]})")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not allowed(address):
            raise ConnectionRefusedError(f"test guard: no connection outside loopback ({address[0]})")
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[str]]:
    """``dns("name.test", "1.2.3.4", "127.0.0.1")``: the name answers each address in turn (the
    last from then on). Returns the list of lookups made (for assertions). Other names resolve as
    usual."""
    real = socket.getaddrinfo
    table: dict[str, list[str]] = {}
    lookups: list[str] = []

    def fake(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name.rstrip(".").endswith(".test"):
            lookups.append(name)
            answers = table.get(name.rstrip("."))
            if not answers:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            address = answers.pop(0) if len(answers) > 1 else answers[0]
            fam = socket.AF_INET6 if ":" in address else socket.AF_INET
            return [(fam, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]
        return real(host, port, family, type, proto, flags)

    monkeypatch.setattr(socket, "getaddrinfo", fake)

    def answer(name: str, *addresses: str) -> list[str]:
        table[name] = list(addresses)
        return lookups

    return answer


class Recorder:
    """ASGI wrapper: the request heads an upstream received."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[dict[str, str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen.append({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
        await self.app(scope, receive, send)


@asynccontextmanager
async def recorded_mcp() -> AsyncIterator[tuple[Recorder, int]]:
    """A real MCP server (the gateway kit's) on loopback that records what reached it."""
    app = Recorder(build_server("victim").streamable_http_app(json_response=True))
    async with serve_app(app, lifespan="on") as url:
        yield app, int(url.rsplit(":", 1)[1])


async def call_echo(stack: Stack, slug: str) -> str:
    """One tool call through the gateway's MCP endpoint: the tool's text, or the error the client got."""
    try:
        async with mcp_client(stack.url + f"/mcp/{slug}", bearer("alice")) as c:
            r = await c.call_tool("echo", {"text": "hi"})
            return ("ERROR: " if r.is_error else "") + text_of(r)
    except Exception as exc:  # the client raises the gateway's JSON-RPC error, perhaps inside a group
        return "ERROR: " + "; ".join(_messages(exc))


def _messages(exc: BaseException) -> list[str]:
    if isinstance(exc, BaseExceptionGroup):
        return [m for e in exc.exceptions for m in _messages(e)]
    return [str(exc)]


async def deploy_remote(stack: Stack, slug: str, url: str, headers: list[dict[str, Any]] | None = None) -> None:
    """What the gateway sees after the catalog accepted and the deployer registered a remote."""
    remote = {"type": "streamable-http", "url": url, "headers": headers or []}
    await stack.deploy(slug, url, spec={"packages": [], "remotes": [remote]})


def openapi_doc(security: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"openapi": "3.0.3", "info": {"title": "Pets", "version": "1.0.0"},
                           "paths": {"/pets": {"get": {"operationId": "listPets", "responses": {"200": {
                               "description": "ok"}}}}}}
    if security:
        doc["components"] = {"securitySchemes": security}
        doc["security"] = [{name: []} for name in security]
    return doc


async def deploy_openapi(stack: Stack, slug: str, base: str, doc: dict[str, Any],
                         inputs: list[dict[str, Any]] | None = None) -> None:
    spec = {"packages": [], "remotes": [], "openapi": {"baseUrl": base, "document": doc, "inputs": inputs or []}}
    await stack.publish(ServerSubmitted(server_id=uuid.uuid4(), slug=slug, name=f"io.test/{slug}", spec=spec))
    await stack.wait_route(slug, lambda r: r.routable and r.kind == "openapi")


async def call_openapi(stack: Stack, slug: str, headers: dict[str, str] | None = None) -> str:
    async with mcp_client(stack.url + f"/mcp/{slug}", {**bearer("alice"), **(headers or {})}) as c:
        r = await c.call_tool("listPets", {})
        return ("ERROR: " if r.is_error else "") + text_of(r)


@asynccontextmanager
async def catalog_service(settings_for: Any, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    from wemcp.catalog.config import Settings
    from wemcp.catalog.main import SPEC

    async with running(SPEC, settings_for(Settings, **overrides)) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://catalog") as client:
            yield client


# ---- OpenAPI documents and tools --------------------------------------------------------------------

@pytest.mark.parametrize("where", ["100.100.100.200", "100.64.7.7", "meta.test"])
async def test_openapi_document_at_a_metadata_or_shared_address_is_refused(settings_for, clean_db, clean_bus, dns,
                                                                          where):
    """Submitting ``openapi_url`` at Aliyun's metadata service (100.100.100.200), elsewhere in the
    shared address space 100.64.0.0/10, or at a name resolving there: refused as such (422), no
    fetch attempted."""
    dns("meta.test", "100.100.100.200")
    async with catalog_service(settings_for) as c:
        r = await c.post("/api/v1/servers", headers=catalog_helpers.as_user(),
                         json={"openapi_url": f"http://{where}/latest/meta-data/openapi.json"})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "not a public address" in r.text and "shared address space" in r.text, r.text


@pytest.mark.parametrize("base", ["http://100.100.100.200/latest", "http://100.64.7.7", "http://meta.test"])
async def test_openapi_tool_base_url_at_a_metadata_or_shared_address_is_refused(stack, dns, base):
    """An OpenAPI server whose base URL is the metadata service or the shared address space: the
    tool call is a tool error saying so (no connection is tried)."""
    dns("meta.test", "100.100.100.200")
    await deploy_openapi(stack, "meta", base, openapi_doc())
    out = await call_openapi(stack, "meta")
    assert out.startswith("ERROR") and "not a public address" in out and "shared address space" in out, out


# Every kind of internal address, named literally or by a name that resolves to it: what each caller
# that takes a URL as data must refuse (the callers share wemcp.common.netpolicy; these prove each one
# goes through it).
INTERNAL = [
    ("http://127.0.0.1:9/x", "loopback"), ("http://[::1]:9/x", "loopback"), ("http://10.0.0.7/x", "private"),
    ("http://192.168.1.1/x", "private"), ("http://169.254.169.254/latest", "link-local"),
    ("http://[::ffff:169.254.169.254]/x", "link-local"), ("http://loop.test:9/x", "loopback"),
    ("http://priv.test/x", "private"), ("http://ll.test/latest", "link-local"),
]


def _internal_names(dns: Callable[..., list[str]]) -> None:
    dns("loop.test", "127.0.0.1")
    dns("priv.test", "10.1.2.3")
    dns("ll.test", "169.254.169.254")


@pytest.mark.parametrize("url,kind", INTERNAL, ids=[u for u, _ in INTERNAL])
async def test_openapi_document_at_any_internal_address_is_refused(settings_for, clean_db, clean_bus, dns, url, kind):
    """The catalog's fetch of a submitted ``openapi_url``: 422 naming the kind of address."""
    _internal_names(dns)
    async with catalog_service(settings_for) as c:
        r = await c.post("/api/v1/servers", headers=catalog_helpers.as_user(), json={"openapi_url": url})
    assert r.status_code == 422, r.text
    assert "not a public address" in r.text and kind in r.text, r.text


async def test_openapi_tool_base_url_at_any_internal_address_is_refused(stack, dns):
    """The gateway's OpenAPI tool calls: a tool error naming the kind of address, for every kind."""
    _internal_names(dns)
    for i, (url, kind) in enumerate(INTERNAL):
        await deploy_openapi(stack, f"internal{i}", url, openapi_doc())
        out = await call_openapi(stack, f"internal{i}")
        assert out.startswith("ERROR") and "not a public address" in out and kind in out, (url, out)


# ---- remote MCP upstreams ------------------------------------------------------------------------------

async def test_remote_upstream_rebinding_to_loopback_is_refused_at_call_time(stack, dns):
    """A remote server registered while its name answered a public address (the deploy-time
    check passed) now answers 127.0.0.1: the gateway's call is refused at connect time, and the
    loopback service behind it receives nothing."""
    async with recorded_mcp() as (victim, port):
        lookups = dns("rebind.test", PUBLIC, "127.0.0.1")
        socket.getaddrinfo("rebind.test", port)  # the deploy-time check saw the public address
        await deploy_remote(stack, "rebind", f"http://rebind.test:{port}/mcp")
        out = await call_echo(stack, "rebind")
        assert out.startswith("ERROR") and "not a public address" in out and "loopback" in out, out
        assert victim.seen == [], victim.seen
        assert len(lookups) >= 2  # resolved again at connect time, and that answer was checked


# ---- agents' server_url tools -------------------------------------------------------------------------

@pytest.mark.parametrize("platform", [{"egress_allow": ""}], indirect=True)
async def test_agent_server_url_to_a_private_address_is_refused(platform, dns):
    """An agent run's ``server_url`` tool at a private address: 400, whether the URL names it
    directly, through an IPv6 form of it, or through a name that rebinds to the loopback between
    the check and the connect; the loopback server receives nothing."""
    await platform.add_provider()
    async with recorded_mcp() as (victim, port):
        dns("rebind.test", PUBLIC, "127.0.0.1")
        _internal_names(dns)
        for url in (f"http://rebind.test:{port}/mcp", f"http://[2002:7f00:1::]:{port}/mcp",
                    "http://10.0.0.7/mcp", "http://100.100.100.200/mcp", f"http://127.0.0.1:{port}/mcp",
                    "http://169.254.169.254/mcp", "http://ll.test/mcp", f"http://loop.test:{port}/mcp"):
            r = await platform.http.post("/v1/chat/completions", headers=platform.auth(), json={
                "model": "scripted-1", "messages": [{"role": "user", "content": "ADD"}],
                "tools": [{"type": "mcp", "server_label": "calc", "server_url": url, "require_approval": "never"}]})
            assert r.status_code == 400, (url, r.status_code, r.text)
            assert "public" in r.text, (url, r.text)
        assert victim.seen == [], victim.seen


# ---- OAuth endpoints -------------------------------------------------------------------------------------

async def test_oauth_endpoint_at_a_private_address_is_refused(settings_for, clean_db, clean_bus, clean_redis, dns,
                                                              tmp_path):
    """An OAuth provider whose token endpoint is not public (here a name resolving to the
    loopback): the sign-in callback is refused with a 4xx problem and the endpoint never receives
    the code or the client secret. An admin's OAuth app with a private token URL: 422."""
    from wemcp.auth.config import Settings
    from wemcp.auth.main import SPEC
    from wemcp.common.sealing import Keyring
    from wemcp.testkit.auth import LoopbackProvider, as_user, browser_login

    provider = LoopbackProvider(profile={"login": "octocat", "id": 583231, "name": "Octocat",
                                         "email": "octocat@example.com", "avatar_url": None})
    async with serve_app(provider.app()) as url:
        provider.base_url = url.replace("127.0.0.1", "idp.test")
        dns("idp.test", "127.0.0.1")
        settings = settings_for(Settings, keks=Keyring.generate_spec("k1"), active_kek="k1",
                                dev_kek_file=str(tmp_path / "kek"), public_url="http://wemcp.test",
                                github=provider.config(pkce=True))
        async with running(SPEC, settings) as app, httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://wemcp.test") as client:
            r = await browser_login(client, "github")
            assert 400 <= r.status_code < 500, (r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/problem+json") and "public" in r.text, r.text
            assert provider.token_requests == []  # the code and the client secret never left

            admin = {"id": str(uuid.uuid4()), "role": "admin", "login": "root"}
            for token_url in ("http://169.254.169.254/token", "http://[::ffff:10.0.0.1]/token"):
                r = await client.post("/api/v1/oauth/apps", headers=as_user(admin), json={
                    "slug": f"app{uuid.uuid4().hex[:6]}", "name": "Internal", "client_id": "c", "client_secret": "s",
                    "authorize_url": "https://idp.example.com/authorize", "token_url": token_url})
                assert r.status_code == 422, (token_url, r.status_code, r.text)


# ---- declared headers ----------------------------------------------------------------------------------

RESERVED_DECLARATIONS = {
    "server.json remote header": {"server_json": {
        "name": "io.github.mallory/role", "version": "1.0.0",
        "remotes": [{"type": "streamable-http", "url": "https://mcp.example.com/mcp",
                     "headers": [{"name": "X-WeMcp-User-Role", "value": "admin"}]}]}},
    "mcpServers header": {"mcp_servers": {"role": {"url": "https://mcp.example.com/mcp",
                                                   "headers": {"X-WeMcp-User-Role": "admin"}}}},
    "OpenAPI security scheme": {"openapi": openapi_doc({"role": {"type": "apiKey", "in": "header",
                                                                 "name": "X-WeMcp-User-Role"}}),
                                "base_url": "https://api.example.com"},
    "hop-by-hop header": {"mcp_servers": {"te": {"url": "https://mcp.example.com/mcp",
                                                 "headers": {"Transfer-Encoding": "chunked"}}}},
}


@pytest.mark.parametrize("submission", list(RESERVED_DECLARATIONS), ids=list(RESERVED_DECLARATIONS))
async def test_declared_platform_header_is_refused_at_submission(settings_for, clean_db, clean_bus, submission):
    """A submission declaring ``X-WeMcp-User-Role`` (or a hop-by-hop header) as a header to send
    upstream: 422 naming it."""
    async with catalog_service(settings_for) as c:
        r = await c.post("/api/v1/servers", headers=catalog_helpers.as_user(), json=RESERVED_DECLARATIONS[submission])
    assert r.status_code == 422, r.text
    assert "X-WeMcp-User-Role" in r.text or "Transfer-Encoding" in r.text, r.text


async def test_declared_platform_header_is_never_forwarded(stack):
    """A route that declares ``X-WeMcp-User-Role`` anyway (submitted before the rule, or straight on
    the bus): neither a remote MCP server nor an OpenAPI API receives it, nor any other
    ``X-WeMcp-*`` or hop-by-hop header; the ordinary declared header still goes."""
    async with recorded_mcp() as (victim, port):
        stack.mcp.upstream.egress.add("127.0.0.1")  # this remote is on loopback on purpose
        await deploy_remote(stack, "role", f"http://127.0.0.1:{port}/mcp", headers=[
            {"name": "X-WeMcp-User-Role", "value": "admin"}, {"name": "Connection", "value": "x-api-key"},
            {"name": "X-Api-Key", "value": "k-123"}])
        out = await call_echo(stack, "role")
        assert out == "hi", out
        assert victim.seen and all("x-wemcp-user-role" not in h for h in victim.seen), victim.seen
        assert all(not k.startswith("x-wemcp-") and h.get("connection", "").lower() != "x-api-key"
                   for h in victim.seen for k in h), victim.seen
        assert all(h.get("x-api-key") == "k-123" for h in victim.seen)

        # an OpenAPI API, its key scheme declaring the platform's header name
        doc = openapi_doc({"role": {"type": "apiKey", "in": "header", "name": "X-WeMcp-User-Role"}})
        doc["paths"] = {"/mcp": {"get": {"operationId": "listPets", "responses": {"200": {"description": "ok"}}}}}
        await deploy_openapi(stack, "role-api", f"http://127.0.0.1:{port}", doc,
                             inputs=[{"name": "PETS_ROLE", "isSecret": True, "isRequired": True}])
        n = len(victim.seen)
        await call_openapi(stack, "role-api", {"X-WeMcp-Env-PETS_ROLE": "admin"})
        assert len(victim.seen) == n + 1 and "x-wemcp-user-role" not in victim.seen[-1], victim.seen[-1]

