"""Quota cannot be dodged (issue 13, item 7): one test per attack, each against the real gateway (the
gateway test kit: real NATS and Redis, real SDK upstreams on loopback) or the real agents service
behind the real gateway (``wemcp.testkit.agents``, through conftest.py). Small daily limits make refusals observable."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx2 as httpx
import pytest
from mcp.shared.exceptions import MCPError

import services.gateway.tests.gateway_testkit as gateway_testkit
from services.gateway.tests.gateway_testkit import USERS, Stack, bearer, mcp_client, set_quota, text_of

# the gateway test kit's fixtures these tests use (the agents' platform comes from conftest.py)
stack, both_upstream = gateway_testkit.stack, gateway_testkit.both_upstream

pytestmark = pytest.mark.asyncio
NIL = "00000000-0000-0000-0000-000000000000"  # the vault principal holding the platform's system keys
MODERN = {"mcp-protocol-version": "2026-07-28"}


def hosted(*inputs: dict[str, Any]) -> dict[str, Any]:
    return {"packages": [{"registryType": "npm", "identifier": "keyed-test", "version": "1.0.0",
                          "environmentVariables": list(inputs)}]}


def secret(name: str, required: bool = True) -> dict[str, Any]:
    return {"name": name, "isSecret": True, "isRequired": required}


def whoami(result: Any) -> dict[str, Any]:
    return json.loads(text_of(result))


def call(tool: str = "echo", **arguments: Any) -> dict[str, Any]:
    """A 2026-07-28 ``tools/call`` (stateless: one POST, no session)."""
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": tool, "arguments": arguments or {"text": "x"}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}}}


async def used(gateway: Stack, user: Any, slug: str) -> int:
    return (await gateway.mcp.quota.used_today(user, [("server", slug)]))[0]


def from_address(address: str) -> httpx.AsyncClient:
    """A client whose connections leave from ``address`` (any of 127.0.0.0/8 on Linux): a second
    machine, as far as the gateway's socket can tell."""
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=address), timeout=30)


# -- own key means: the caller's own values cover every secret the server requires ------------------------
async def test_junk_env_header_does_not_turn_a_system_key_call_into_an_own_key_call(stack, both_upstream):
    """Attack: the platform's key fills API_KEY; the caller adds a junk value for another declared
    secret (an optional one) and one for a name the server does not declare, hoping the call counts
    as "own key". It stays a system-key call: counted, refused at the limit; the undeclared name is
    neither used nor forwarded."""
    await stack.deploy("keyed", both_upstream, spec=hosted(secret("API_KEY"), secret("DEBUG_TOKEN", False)))
    await set_quota(stack, 2)
    junk = {**bearer("alice"), "X-WeMcp-Env-DEBUG_TOKEN": "junk", "X-WeMcp-Env-NOT_DECLARED": "junk"}
    async with mcp_client(stack.url + "/mcp/keyed", junk) as c:
        seen = whoami(await c.call_tool("whoami", {}))
        assert seen["api_key"] == "system-key-0001"
        assert seen["env"] == ["api_key", "debug_token"], seen  # NOT_DECLARED never reaches the server
        assert await used(stack, USERS["alice"], "keyed") == 1
        assert text_of(await c.call_tool("echo", {"text": "2"})) == "2"
        with pytest.raises(MCPError) as refused:
            await c.call_tool("echo", {"text": "3"})
        assert refused.value.code == -32029, refused.value.error
    assert await used(stack, USERS["alice"], "keyed") == 2


async def test_a_server_that_needs_no_secret_is_never_own_key(stack, both_upstream):
    """Attack: a server whose only secret is optional (and a required non-secret setting); the caller
    sends values for both. Nothing the server requires is a key, so nothing the caller sends makes
    the call theirs: counted. A server with no inputs at all is counted too."""
    await stack.deploy("nosecret", both_upstream, spec=hosted(
        secret("DEBUG_TOKEN", False), {"name": "REGION", "isSecret": False, "isRequired": True}))
    await stack.deploy("plain", both_upstream)
    await set_quota(stack, 2)
    own = {**bearer("alice"), "X-WeMcp-Env-DEBUG_TOKEN": "mine", "X-WeMcp-Env-REGION": "eu",
           "X-WeMcp-Env-API_KEY": "mine"}
    for slug in ("nosecret", "plain"):
        async with mcp_client(f"{stack.url}/mcp/{slug}", own) as c:
            for i in range(2):
                assert text_of(await c.call_tool("echo", {"text": str(i)})) == str(i)
            with pytest.raises(MCPError) as refused:
                await c.call_tool("echo", {"text": "3"})
            assert refused.value.code == -32029, (slug, refused.value.error)
        assert await used(stack, USERS["alice"], slug) == 2


@pytest.mark.parametrize("stack", [{"egress_allow": "127.0.0.1"}], indirect=True)  # the pasted remote is on loopback
async def test_partial_own_values_are_metered(stack, both_upstream):
    """Attack: a server needs two secrets (or a secret and a ``{PLACEHOLDER}`` of a pasted config)
    and the platform holds both; the caller supplies one of their own (in the vault or on the
    request) and lets the platform fill the other. Counted; only a caller covering all of them is
    unmetered."""
    await stack.deploy("pair", both_upstream, spec=hosted(secret("API_KEY"), secret("API_SECRET")))
    # a pasted remote config: `X-Tenant: {TENANT}` is required but, by its name, not a secret
    await stack.deploy("pasted", both_upstream, spec={"remotes": [{
        "type": "streamable-http", "url": both_upstream, "headers": [
            {"name": "X-Api-Key", "value": "{API_KEY}", "isSecret": True, "isRequired": True},
            {"name": "X-Tenant", "value": "{TENANT}", "isSecret": False, "isRequired": True}]}]})
    stack.auth.vault[(NIL, "pair")] = {"API_KEY": "system-key-0001", "API_SECRET": "system-secret-0001"}
    stack.auth.vault[(NIL, "pasted")] = {"API_KEY": "system-key-0001", "TENANT": "platform-tenant"}
    stack.auth.vault[(str(USERS["alice"]), "pair")] = {"API_KEY": "alice-own"}
    await set_quota(stack, 1)
    cases = [("pair", bearer("alice")),  # vault: API_KEY only
             ("pair", {**bearer("bob"), "X-WeMcp-Env-API_SECRET": "bob-own"}),  # request: API_SECRET only
             ("pasted", {**bearer("alice"), "X-WeMcp-Env-API_KEY": "alice-own"})]  # TENANT from the platform
    for slug, headers in cases:
        async with mcp_client(f"{stack.url}/mcp/{slug}", headers) as c:
            assert text_of(await c.call_tool("echo", {"text": "1"})) == "1"
            with pytest.raises(MCPError) as refused:
                await c.call_tool("echo", {"text": "2"})
            assert refused.value.code == -32029, (slug, headers, refused.value.error)
    # covering every secret input is an own-key call: beyond the quota, uncounted
    full = {**bearer("bob"), "X-WeMcp-Env-API_KEY": "bob-key", "X-WeMcp-Env-API_SECRET": "bob-secret"}
    async with mcp_client(stack.url + "/mcp/pair", full) as c:
        for _ in range(3):
            assert whoami(await c.call_tool("whoami", {}))["api_key"] == "bob-key"
    assert await used(stack, USERS["bob"], "pair") == 1


# -- agent runs: only the saved agent's own servers ride on the run context --------------------------------
async def test_tools_added_to_an_agent_run_are_counted(platform):
    """Attack: call a saved agent (counted once, against its 100/day) with an extra MCP tool of the
    caller's choosing, hoping its calls ride on the agent-run context. The extra server's call is
    counted like any other; the agent's own server's call is not."""
    p = platform
    p.router.slugs.add("clock")
    await p.add_provider()
    r = await p.http.post("/api/v1/agents", headers=p.auth(), json={
        "name": "Time Helper", "model": "scripted-1", "mcp_servers": [{"ref": "time"}]})
    assert r.status_code == 201, r.text
    agent = r.json()["id"]
    r = await p.http.post(f"/v1/agents/{agent}/chat/completions", headers=p.auth(), json={
        "messages": [{"role": "user", "content": "EACH clock, please"}],
        "tools": [{"type": "mcp", "ref": "clock", "server_label": "clock"}]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "2 clocks read."
    decided = sorted((s["slug"], s["reason"], s["counted"]) for s in p.router.seen)
    assert decided == [("clock", "counted", True), ("time", "agent_run", False)], decided
    assert await p.router.quota.used_today(p.user_id, [("server", "clock"), ("server", "time"),
                                                       ("agent", agent)]) == [1, 0, 1]


async def test_an_agent_run_context_covers_only_the_agents_servers(stack, both_upstream):
    """Attack: a valid agent-run context (the agent lists ``keyed``) presented on a call to another
    server. It is ignored there (counted, refused at the limit) and honoured on the agent's server."""
    from wemcp.quota.runcontext import sign_run_context

    secret_ = "agent-run-secret-for-tests-0123456789"
    stack.mcp.quota.run_context_secret = secret_
    await stack.deploy("keyed", both_upstream)
    await stack.deploy("other", both_upstream)
    await set_quota(stack, 1)
    token = sign_run_context(secret_, user_id=USERS["alice"], agent_id=uuid.uuid4(), run_id="r1",
                             servers=["keyed"])
    headers = {**bearer("alice"), "X-WeMcp-Agent-Run": token}
    async with mcp_client(stack.url + "/mcp/keyed", headers) as c:
        for i in range(3):
            assert text_of(await c.call_tool("echo", {"text": str(i)})) == str(i)
    async with mcp_client(stack.url + "/mcp/other", headers) as c:
        assert text_of(await c.call_tool("echo", {"text": "1"})) == "1"
        with pytest.raises(MCPError) as refused:
            await c.call_tool("echo", {"text": "2"})
        assert refused.value.code == -32029, refused.value.error
    assert await used(stack, USERS["alice"], "keyed") == 0
    assert await used(stack, USERS["alice"], "other") == 1


# -- anonymous calls -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stack", [{"environment": "production"}], indirect=True)
async def test_anonymous_mcp_calls_are_refused_in_production(stack, both_upstream):
    """Attack: call a server anonymously in production (one shared free bucket for the world). 401
    with a WWW-Authenticate naming where the free key comes from; a signed-in caller is served."""
    await stack.deploy("plain", both_upstream)
    async with httpx.AsyncClient(timeout=30) as h:
        r = await h.post(stack.url + "/mcp/plain", headers=MODERN, json=call())
        assert r.status_code == 401, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith("Bearer ") and "/api/v1/api-keys" in challenge, challenge
        assert "/api/v1/api-keys" in r.json()["detail"]
        r = await h.post(stack.url + "/mcp/plain", headers={**MODERN, **bearer("alice")}, json=call())
        assert r.status_code == 200, r.text


async def test_anonymous_calls_are_counted_per_address_and_spoofed_forwarded_for_is_ignored(stack, both_upstream):
    """Attack: anonymous callers share one bucket (one caller exhausts it for everyone), and a
    caller rotates X-Forwarded-For / Forwarded to look like many. Without configured proxies the
    address is the socket's: the rotating caller gets its 2 calls; another machine still gets its own."""
    await stack.deploy("plain", both_upstream)
    await set_quota(stack, 2)
    async with from_address("127.0.0.1") as a, from_address("127.0.0.2") as b:
        for i in range(3):
            spoof = {**MODERN, "X-Forwarded-For": f"198.51.100.{i}", "Forwarded": f"for=198.51.100.{i}"}
            r = await a.post(stack.url + "/mcp/plain", headers=spoof, json=call())
            assert r.status_code == (200 if i < 2 else 429), (i, r.text)
        r = await b.post(stack.url + "/mcp/plain", headers=MODERN, json=call())
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-remaining"] == "1"


@pytest.mark.parametrize("stack", [{"trusted_proxies": ["127.0.0.1/32"]}], indirect=True)
async def test_forwarded_for_is_honoured_only_from_a_trusted_proxy(stack, both_upstream):
    """Behind a configured proxy (127.0.0.1) each client behind it has its own bucket, named by the
    rightmost address the proxy did not add itself (a spoofed leftmost entry changes nothing); the
    same header from a peer that is not a configured proxy is ignored."""
    await stack.deploy("plain", both_upstream)
    await set_quota(stack, 2)
    url = stack.url + "/mcp/plain"
    async with from_address("127.0.0.1") as proxy, from_address("127.0.0.2") as direct:
        for i in range(3):
            xff = {**MODERN, "X-Forwarded-For": f"192.0.2.{i}, 203.0.113.7"}
            r = await proxy.post(url, headers=xff, json=call())
            assert r.status_code == (200 if i < 2 else 429), (i, r.text)
        r = await proxy.post(url, headers={**MODERN, "X-Forwarded-For": "203.0.113.8"}, json=call())
        assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == "1", r.text
        for i in range(3):  # not a proxy: its own socket address, whatever it claims
            r = await direct.post(url, headers={**MODERN, "X-Forwarded-For": f"203.0.113.{20 + i}"}, json=call())
            assert r.status_code == (200 if i < 2 else 429), (i, r.text)
