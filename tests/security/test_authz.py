"""Issue 13, item 6: authorization holes. One test per attack, each made the way an attacker would:

- reading another user's deployment (live output, endpoint), signed out or as someone else;
- re-specifying an owner-less (imported, crawled) server as a plain user, with a ``NODE_OPTIONS``
  default that would then run for every user of it;
- reaching a server outside a server-scoped API key's scope through a bundle (and the agents API);
- receiving a user's OAuth token as a server that merely has the app's slug;
- login CSRF: an OAuth flow started in one browser finished in another (state not bound), and an
  API key in a ``/login?key=`` link attaching the clicker's provider account to the key's owner;
- auth starting in production with a generated development KEK.

Services are run in-process on the real infrastructure, through the same test kits as their own tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest
import pytest_asyncio
from sqlalchemy import update
from starlette.requests import Request

from services.deployer.tests.deployer_testkit import deployer_settings

# the gateway test kit's fixtures (its stack with real NATS/Redis, an upstream MCP server)
from services.gateway.tests.gateway_testkit import USERS, both_upstream, fake_verifier, stack  # noqa: F401
from wemcp.auth import service as auth_service
from wemcp.auth.config import Settings as AuthSettings
from wemcp.auth.main import SPEC as AUTH
from wemcp.catalog.config import Settings as CatalogSettings
from wemcp.catalog.main import SPEC as CATALOG
from wemcp.catalog.models import Server
from wemcp.common.errors import Unauthorized
from wemcp.common.identity import Identity
from wemcp.common.sealing import Keyring
from wemcp.common.service import running
from wemcp.common.trust import PlatformHeaders
from wemcp.deployer.main import SPEC as DEPLOYER
from wemcp.deployer.models import Deployment
from wemcp.devstack.infra import free_port
from wemcp.devstack.testing import serve_app
from wemcp.gateway.config import Settings as GatewaySettings
from wemcp.gateway.identity import ApiKeyGrant
from wemcp.gateway.main import SPEC as GATEWAY
from wemcp.testkit.auth import CLIENT_ID, CLIENT_SECRET, LoopbackProvider, as_user, new_id

pytestmark = pytest.mark.asyncio
PLATFORM = PlatformHeaders("auth", issuer="gateway")  # the gateway's own credential on auth's internal routes
MODERN = {"mcp-protocol-version": "2026-07-28", "accept": "application/json, text/event-stream"}


def _user(login: str, role: str = "user") -> dict[str, str]:
    return {"id": str(uuid.uuid4()), "role": role, "login": login}


def on_deployer(user: dict[str, Any]) -> dict[str, str]:
    """The gateway's assertion for ``user``, addressed to the deployer (assertions name their receiver)."""
    return as_user(user, service="deployer")


def on_catalog(user: dict[str, Any]) -> dict[str, str]:
    return as_user(user, service="catalog")

# -- 1. deployments: owner and admins only, output redacted -----------------------------------------

@pytest_asyncio.fixture
async def deployer(settings_for: Any, tmp_path: Path, clean_db: None, clean_bus: None) -> AsyncIterator[Any]:
    (tmp_path / "archives").mkdir()
    async with running(DEPLOYER, deployer_settings(settings_for, tmp_path)) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://deployer") as c:
            yield app, c


async def test_deployment_is_readable_by_its_owner_and_admins_only(deployer):
    """Attack: ``GET /api/v1/deployments/{slug}`` of someone else's server, signed out or signed in,
    to read its live output (users' keys printed by the server), endpoint and state."""
    app, c = deployer
    owner, other, admin = _user("owner"), _user("other"), _user("ops", "admin")
    leaked = "sk-live-0123456789abcdefghij"
    input_value = "value-of-an-input-9876"
    async with app.state.runtime.sessions() as s, s.begin():
        s.add(Deployment(slug="private-one", server_id=uuid.uuid4(), name="io.test/private-one",
                         owner_id=uuid.UUID(owner["id"]), spec={"packages": []}, status="failed",
                         backend="local", steps=[], protocol_versions=[], introspection={},
                         endpoint="http://127.0.0.1:9/s/private-one/mcp",
                         reason=f"crashed; OPENAI_API_KEY={input_value}",
                         log_tail=f"using key {leaked}\nAuthorization: Bearer {input_value}\n"
                                  f"API_KEY={input_value} ready"))
        s.add(Deployment(slug="ownerless", server_id=uuid.uuid4(), name="io.test/ownerless", owner_id=None,
                         spec={"packages": []}, status="deployed", backend="local", steps=[],
                         protocol_versions=[], introspection={}, log_tail=""))

    anon = await c.get("/api/v1/deployments/private-one")
    assert anon.status_code == 401, anon.text
    assert anon.headers["content-type"] == "application/problem+json"
    # another user's slug answers exactly like a slug that does not exist
    theirs = await c.get("/api/v1/deployments/private-one", headers=on_deployer(other))
    missing = await c.get("/api/v1/deployments/no-such-one", headers=on_deployer(other))
    assert theirs.status_code == missing.status_code == 404, theirs.text
    assert theirs.json()["detail"].replace("private-one", "X") == missing.json()["detail"].replace("no-such-one", "X")
    assert "127.0.0.1:9" not in theirs.text
    # owner-less (imported, crawled) servers: admins only
    assert (await c.get("/api/v1/deployments/ownerless", headers=on_deployer(other))).status_code == 404
    assert (await c.get("/api/v1/deployments/ownerless", headers=on_deployer(admin))).status_code == 200

    for reader in (owner, admin):
        r = await c.get("/api/v1/deployments/private-one", headers=on_deployer(reader))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["slug"] == "private-one" and body["endpoint"].endswith("/s/private-one/mcp")
        assert leaked not in r.text and input_value not in r.text, body["logs"]
        assert "ready" in body["logs"] and "[redacted]" in body["logs"] and "[redacted]" in body["reason"]
    # the events stream (steps, install and start-up output, final state): the same readers
    assert (await c.get("/api/v1/deployments/private-one/events")).status_code == 401
    for path in ("private-one", "ownerless"):
        r = await c.get(f"/api/v1/deployments/{path}/events", headers=on_deployer(other))
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", r.text
    for reader, path in ((owner, "private-one"), (admin, "private-one"), (admin, "ownerless")):
        r = await c.get(f"/api/v1/deployments/{path}/events", headers=on_deployer(reader))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
        assert "event: done" in r.text and leaked not in r.text and input_value not in r.text
    # the plan endpoint needs a signed-in caller too
    plan = await c.post("/api/v1/deployments/plan", json={"slug": "x", "spec": {"packages": []}})
    assert plan.status_code == 401


async def test_egress_record_is_readable_by_the_owner_and_admins_only(deployer):
    """Attack: ``GET /api/v1/deployments/{slug}/egress`` of someone else's server (which hosts it
    calls: who its users are, which services they use), signed out or as someone else."""
    app, c = deployer
    owner, other, admin = _user("owner"), _user("other"), _user("ops", "admin")
    async with app.state.runtime.sessions() as s, s.begin():
        s.add(Deployment(slug="netted", server_id=uuid.uuid4(), name="io.test/netted", owner_id=uuid.UUID(owner["id"]),
                         spec={"packages": [], "network": True}, status="deployed", backend="local", steps=[],
                         protocol_versions=[], introspection={}, log_tail=""))
    from wemcp.deployer.egress import Usage

    proxy = app.state.runtime.extras["orchestrator"].bridge.egress
    proxy.usage["netted"] = Usage()
    proxy.usage["netted"].host("api.example.com:443").connections += 1

    anon = await c.get("/api/v1/deployments/netted/egress")
    assert anon.status_code == 401 and anon.headers["content-type"] == "application/problem+json"
    theirs = await c.get("/api/v1/deployments/netted/egress", headers=on_deployer(other))
    missing = await c.get("/api/v1/deployments/no-such-one/egress", headers=on_deployer(other))
    assert theirs.status_code == missing.status_code == 404, theirs.text
    assert "api.example.com" not in theirs.text
    for reader in (owner, admin):
        r = await c.get("/api/v1/deployments/netted/egress", headers=on_deployer(reader))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["network"] is True and [h["host"] for h in body["hosts"]] == ["api.example.com:443"]
        assert body["hosts"][0]["connections"] == 1 and body["limits"]["max_connections"] >= 1


# -- 2. owner-less servers: admins only ---------------------------------------------------------------

@pytest_asyncio.fixture
async def catalog(settings_for: Any, clean_db: None, clean_bus: None) -> AsyncIterator[Any]:
    async with running(CATALOG, settings_for(CatalogSettings)) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://catalog") as c:
            yield app, c


def _npm(version: str, env: dict[str, str]) -> dict[str, Any]:
    return {"mcpServers": {"weather": {"command": "npx", "args": ["-y", f"@acme/weather-mcp@{version}"],
                                       "env": env}}}


async def test_plain_user_cannot_respec_an_ownerless_server(catalog):
    """Attack: an imported or crawled server has no owner; a plain user submits the same package
    again (a new version) with ``NODE_OPTIONS=--require /tmp/x.js`` as an env default, which would then
    run in every user's process of that server."""
    app, c = catalog
    admin, mallory = _user("ops", "admin"), _user("mallory")
    first = await c.post("/api/v1/servers", json=_npm("1.0.0", {"UNITS": "metric"}), headers=on_catalog(admin))
    assert first.status_code == 202, first.text
    slug = first.json()["slug"]
    async with app.state.runtime.sessions() as s, s.begin():  # as the crawler / an import leaves it
        await s.execute(update(Server).where(Server.slug == slug).values(owner_id=None))

    evil = _npm("1.0.1", {"UNITS": "metric", "NODE_OPTIONS": "--require /tmp/x.js"})
    r = await c.post("/api/v1/servers", json=evil, headers=on_catalog(mallory))
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json" and r.json()["slug"] == slug
    benign = await c.post("/api/v1/servers", json=_npm("1.0.2", {"UNITS": "imperial"}), headers=on_catalog(mallory))
    assert benign.status_code == 403, benign.text
    patch = await c.patch(f"/api/v1/servers/{slug}", json={"title": "mine now"}, headers=on_catalog(mallory))
    assert patch.status_code == 403
    detail = (await c.get(f"/api/v1/servers/{slug}", headers=on_catalog(admin))).json()
    assert detail["version"] == "1.0.0" and "NODE_OPTIONS" not in str(detail["spec"])
    # a plain user's own server cannot declare loader/interpreter variables either; an admin's can
    own = await c.post("/api/v1/servers", json={"mcpServers": {"x": {"command": "npx", "args": [
        "-y", "@mallory/tool@1.0.0"], "env": {"LD_PRELOAD": "/tmp/x.so"}}}}, headers=on_catalog(mallory))
    assert own.status_code == 422 and "LD_PRELOAD" in own.json()["detail"], own.text
    ok = await c.post("/api/v1/servers", json=_npm("1.0.3", {"NODE_OPTIONS": "--max-old-space-size=256"}),
                      headers=on_catalog(admin))
    assert ok.status_code == 202, ok.text


# -- 3. server-scoped API keys hold through bundles ----------------------------------------------------

SCOPED = "wmk_scoped-to-alpha"


async def scoped_verifier(request: Request) -> Identity | None:
    """The gateway test kit's verifier plus one server-scoped platform API key of alice's."""
    auth = request.headers.get("authorization") or ""
    if auth == f"Bearer {SCOPED}":
        request.state.api_key = ApiKeyGrant("key-1", ("alpha",))
        return Identity(user_id=USERS["alice"], role="user", login="alice")
    if auth.startswith("Bearer wmk_"):
        raise Unauthorized("unknown API key")
    return await fake_verifier(request)


def _call(name: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": name, "arguments": {"text": "hi"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}


async def test_scoped_key_cannot_reach_other_servers_through_a_bundle(stack, both_upstream):  # noqa: F811
    """Attack: alice's key scoped to ``alpha`` makes (or uses) a bundle with ``gamma`` in it and calls
    ``gamma``'s tools; or runs an agent, which may call any server."""
    stack.runtime.extras["gateway"].verifier = scoped_verifier
    await stack.deploy("alpha", both_upstream)
    await stack.deploy("gamma", both_upstream)
    key = {"Authorization": f"Bearer {SCOPED}"}
    async with httpx.AsyncClient(base_url=stack.url) as h:
        made = await h.post("/api/v1/bundles", headers=key, json={"servers": ["alpha", "gamma"]})
        assert made.status_code == 403, made.text
        assert "'gamma'" in made.json()["detail"] and "'alpha'" not in made.json()["detail"]
        # a bundle made with alice's session, used with the scoped key
        doc = (await h.post("/api/v1/bundles", headers={"Authorization": "Bearer test-alice"},
                            json={"servers": ["alpha", "gamma"]})).json()
        r = await h.post(doc["url"], headers={**MODERN, **key}, json=_call("gamma__echo"))
        assert r.status_code == 403, r.text
        assert r.headers["content-type"] == "application/problem+json" and "'gamma'" in r.json()["detail"]
        # within scope everything still works: the key's own bundle, its own server
        mine = await h.post("/api/v1/bundles", headers=key, json={"servers": ["alpha"]})
        assert mine.status_code == 201, mine.text
        r = await h.post(mine.json()["url"], headers={**MODERN, **key}, json=_call("alpha__echo"))
        assert r.status_code == 200 and r.json()["result"]["content"][0]["text"] == "hi", r.text
        r = await h.post("/api/v1/servers/alpha/tools/echo/call", headers=key, json={"arguments": {"text": "x"}})
        assert r.status_code == 200, r.text
        r = await h.post("/api/v1/servers/gamma/tools/echo/call", headers=key, json={"arguments": {"text": "x"}})
        assert r.status_code == 403
        # another user's bundle id: refused, and not readable
        r = await h.post(doc["url"], headers={**MODERN, "Authorization": "Bearer test-bob"},
                         json=_call("alpha__echo"))
        assert r.status_code == 403
        assert (await h.get(f"/api/v1/bundles/{doc['id']}", headers={"Authorization": "Bearer test-bob"})
                ).status_code == 404
        # agent runs (the OpenAI-compatible API) and the rest of the API are outside any server scope
        r = await h.post("/v1/chat/completions", headers=key, json={"model": "agent:x", "messages": []})
        assert r.status_code == 403, r.text
        r = await h.post(f"/mcp/agents/{uuid.uuid4()}", headers={**MODERN, **key}, json=_call("x"))
        assert r.status_code == 403 and "'alpha'" in r.json()["detail"], r.text
        r = await h.post("/api/v1/api-keys", headers=key, json={"name": "unscoped", "servers": None})
        assert r.status_code == 403, r.text


# -- auth in-process with the loopback OAuth provider (4 and 5) ---------------------------------------

@pytest_asyncio.fixture
async def provider() -> AsyncIterator[LoopbackProvider]:
    p = LoopbackProvider()
    async with serve_app(p.app(), free_port()) as url:
        p.base_url = url
        p.profile = {"login": "victim", "id": new_id(), "avatar_url": None, "name": "Victim", "email": None}
        yield p


@pytest_asyncio.fixture
async def auth_app(settings_for: Any, provider: LoopbackProvider, tmp_path: Path, clean_db: None,
                   clean_bus: None, clean_redis: None) -> AsyncIterator[Any]:
    settings = settings_for(AuthSettings, keks=Keyring.generate_spec("k1"), dev_kek_file=str(tmp_path / "kek"),
                            public_url="http://wemcp.test", github=provider.config(pkce=True),
                            egress_allow="127.0.0.1")  # the loopback OAuth provider
    async with running(AUTH, settings) as app:
        yield app


def _browser(app: Any) -> httpx.AsyncClient:
    """A browser of its own (its own cookie jar) talking to ``app``."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wemcp.test")


async def _users(app: Any, *specs: tuple[str, str]) -> list[dict[str, Any]]:
    st = app.state.runtime.extras["auth"]
    async with st.sessions() as s, s.begin():
        return [auth_service.user_read(await auth_service.create_user(s, login=login, role=role))
                for login, role in specs]


async def _at_provider(url: str) -> str:
    """The provider's redirect back (path and query): the user approved."""
    async with httpx.AsyncClient() as b:
        r = await b.get(url)
    assert r.status_code == 302, r.text
    back = urlsplit(r.headers["location"])
    return f"{back.path}?{back.query}"


async def test_oauth_token_goes_only_to_servers_the_app_lists(auth_app, provider):
    """Attack: a user connected the "netdisk" app, which lists the server ``netdisk-official``.
    Someone publishes a server whose slug is ``netdisk``: the gateway asks auth for the user's token
    for the server it calls, and auth used to match that slug against the app's slug."""
    admin, user, other = await _users(auth_app, ("ops", "admin"), ("netdisk-user", "user"), ("other", "user"))
    app_body = {"slug": "netdisk", "name": "Netdisk", "authorize_url": f"{provider.base_url}/authorize",
                "token_url": f"{provider.base_url}/token", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                "servers": ["netdisk-official"]}
    async with _browser(auth_app) as c:
        assert (await c.post("/api/v1/oauth/apps", json=app_body, headers=as_user(admin))).status_code == 201
        start = await c.post("/api/v1/connections/netdisk/start", headers=as_user(user))
        done = await c.get(await _at_provider(start.json()["authorization_url"]))
        assert done.status_code == 200, done.text
        token = list(provider.access)[-1]

        squatter = await c.get(f"/internal/auth/connections/{user['id']}/netdisk", headers=PLATFORM)
        assert squatter.status_code == 404 and token not in squatter.text, squatter.text
        listed = await c.get(f"/internal/auth/connections/{user['id']}/netdisk-official", headers=PLATFORM)
        assert listed.status_code == 200 and listed.json()["access_token"] == token
        # another user's id: that user has no connection, so nothing
        theirs = await c.get(f"/internal/auth/connections/{other['id']}/netdisk-official", headers=PLATFORM)
        assert theirs.status_code == 404 and token not in theirs.text
        # an app names the servers its tokens go to
        r = await c.post("/api/v1/oauth/apps", json={**app_body, "slug": "other-app", "servers": []},
                         headers=as_user(admin))
        assert r.status_code == 422, r.text


async def test_oauth_flow_finished_in_another_browser_is_refused(auth_app, provider):
    """Attack (login CSRF): the attacker starts linking GitHub to their own account, and makes the
    victim's browser open the authorization URL; the victim approves with their GitHub account,
    which would be linked to the attacker's account (the attacker then signs in as the victim's
    GitHub, and the victim, signing in with GitHub, lands in the attacker's account). Same with a
    third-party connection: the victim's token would land in the attacker's account."""
    attacker, admin = await _users(auth_app, ("attacker", "user"), ("ops", "admin"))
    async with _browser(auth_app) as attacker_browser, _browser(auth_app) as victim_browser:
        started = await attacker_browser.post("/api/v1/auth/github/link", headers=as_user(attacker))
        assert started.status_code == 200, started.text
        back = await _at_provider(started.json()["authorization_url"])  # the victim approves ...
        r = await victim_browser.get(back)  # ... in the victim's browser
        assert r.status_code == 400, r.text
        assert r.headers["content-type"] == "application/problem+json"
        # the victim's GitHub account is not linked: signing in with it makes a new account
        fresh = await victim_browser.get("/api/v1/auth/github/login")
        signed_in = await victim_browser.get(await _at_provider(fresh.headers["location"]))
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.json()["user"]["id"] != attacker["id"] and signed_in.json()["created"] is True
        # a plain sign-in URL started by the attacker cannot be finished by the victim either
        plain = await attacker_browser.get("/api/v1/auth/github/login")
        assert (await victim_browser.get(await _at_provider(plain.headers["location"]))).status_code == 400
        # a third-party connection started by the attacker, approved in the victim's browser
        assert (await attacker_browser.post("/api/v1/oauth/apps", headers=as_user(admin), json={
            "slug": "netdisk", "name": "Netdisk", "authorize_url": f"{provider.base_url}/authorize",
            "token_url": f"{provider.base_url}/token", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "servers": ["netdisk"]})).status_code == 201
        connect = await attacker_browser.post("/api/v1/connections/netdisk/start", headers=as_user(attacker))
        r = await victim_browser.get(await _at_provider(connect.json()["authorization_url"]))
        assert r.status_code == 400, r.text
        mine = await attacker_browser.get("/api/v1/connections", headers=as_user(attacker))
        assert mine.json()["items"] == []


async def test_login_link_with_a_key_in_the_query_does_not_link(auth_app, provider, settings_for):
    """Attack (login CSRF): the attacker sends ``/api/v1/auth/github/login?key=<attacker's API key>``;
    the victim signs in with GitHub and their GitHub account was linked to the attacker's account."""
    attacker, = await _users(auth_app, ("attacker", "user"))
    async with _browser(auth_app) as c:
        created = await c.post("/api/v1/api-keys", headers=as_user(attacker), json={"name": "k", "servers": None})
        key = created.json()["key"]
    async with serve_app(auth_app, free_port()) as auth_url:
        gw_settings = settings_for(GatewaySettings, auth_url=auth_url, jwks_min_refetch_seconds=0.2)
        async with running(GATEWAY, gw_settings) as gw, _browser(gw) as victim_browser:
            start = await victim_browser.get(f"/api/v1/auth/github/login?key={key}")
            assert start.status_code == 302, start.text
            r = await victim_browser.get(await _at_provider(start.headers["location"]))
            assert r.status_code == 200, r.text
            assert r.json()["user"]["id"] != attacker["id"] and r.json()["user"]["login"] == "victim"
            me = await victim_browser.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})
            assert me.status_code == 200 and me.json()["identities"] == [], me.text


# -- 6. production needs real KEKs ---------------------------------------------------------------------

async def test_production_refuses_to_start_without_keks(infra, tmp_path):
    """Attack surface: production auth started without ``WEMCP_AUTH_KEKS`` silently generated a
    development KEK into a local file and sealed every vault value with it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEMCP_")}
    env.update(WEMCP_ENV="production", DATABASE_URL=infra.database_url, NATS_URL=infra.nats_url,
               REDIS_URL=infra.redis_url, WEMCP_AUTH_PORT=str(free_port()),
               WEMCP_AUTH_DEV_KEK_FILE=str(tmp_path / "dev-kek"),
               WEMCP_SERVICE_KEYS="k1:a-service-key-for-this-test-only")  # only the KEKs are missing
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "wemcp.auth.main", env=env,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        async with asyncio.timeout(120):  # a loaded runner takes seconds just to import
            _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            with contextlib.suppress(Exception):
                await proc.wait()
    assert proc.returncode == 2, err.decode()
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "WEMCP_AUTH_KEKS" in lines[0], lines
    assert not (tmp_path / "dev-kek").exists()
