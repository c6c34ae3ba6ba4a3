"""Keys and quota: a hosted server that reports the key it received."""

from __future__ import annotations

import asyncio
import functools
import json

import httpx2 as httpx
import nats
import pytest
from mcp.shared.exceptions import MCPError

from services.gateway.tests.gateway_testkit import USERS, bearer, mcp_client, set_quota, text_of
from wemcp.common.trust import BridgeGuard, environment_ring
from wemcp.devstack.testing import wait_for

pytestmark = pytest.mark.asyncio
SPEC = {"packages": [{"registryType": "npm", "identifier": "keyed-test", "version": "1.0.0",
                      "environmentVariables": [{"name": "API_KEY", "isSecret": True, "isRequired": True}]}]}


def whoami(result) -> dict:
    return json.loads(text_of(result))


async def test_no_key_system_key_vault_key_unmetered(stack, both_upstream, infra):
    await stack.deploy("keyed", both_upstream, spec=SPEC)
    await set_quota(stack, 2)
    stack.auth.vault[(str(USERS["bob"]), "keyed")] = {"API_KEY": "bob-own-key"}
    nc = await nats.connect(infra.nats_url)
    events: list[dict] = []
    sub = await nc.subscribe("mcp.call.batch", cb=functools.partial(_append, events))
    try:
        async with mcp_client(stack.url + "/mcp/keyed", bearer("alice")) as c:
            r = await c.call_tool("whoami", {})
            assert whoami(r)["api_key"] == "system-key-0001"
            # a hosted server's bridge gets the platform's credential for this slug (and no other)
            guard = BridgeGuard(environment_ring())
            assert guard.check("keyed", whoami(r)["assertion"]) is None
            assert guard.check("other", whoami(r)["assertion"]) is not None
            assert text_of(await c.call_tool("echo", {"text": "2"})) == "2"
        # the third system-key call of the day: HTTP 429 carrying the JSON-RPC error, with Retry-After;
        # the official client surfaces it as the call's error
        async with mcp_client(stack.url + "/mcp/keyed", bearer("alice")) as c:
            with pytest.raises(MCPError) as refused:
                await c.call_tool("echo", {"text": "3"})
            assert refused.value.code == -32029, refused.value.error
        async with httpx.AsyncClient() as h:
            modern = {**bearer("alice"), "mcp-protocol-version": "2026-07-28"}
            r = await h.post(stack.url + "/mcp/keyed", headers=modern,
                             json={"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
                                 "name": "echo", "arguments": {"text": "x"}, "_meta": {
                                     "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                     "io.modelcontextprotocol/clientCapabilities": {}}}})
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == -32029
            assert int(r.headers["retry-after"]) > 0
            assert r.headers["x-ratelimit-limit"] == "2" and r.headers["x-ratelimit-remaining"] == "0"
            # REST try-it-out: HTTP 429 problem
            r = await h.post(stack.url + "/api/v1/servers/keyed/tools/echo/call", headers=bearer("alice"),
                             json={"arguments": {"text": "y"}})
            assert r.status_code == 429, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert int(r.headers["retry-after"]) > 0
        # bob's vault key: his key reaches the server, unmetered (more calls than the quota)
        async with mcp_client(stack.url + "/mcp/keyed", bearer("bob"), mode="legacy") as c:
            for _ in range(4):
                assert whoami(await c.call_tool("whoami", {}))["api_key"] == "bob-own-key"
        # a key sent with the request beats the vault
        async with mcp_client(stack.url + "/mcp/keyed", {**bearer("bob"), "X-WeMcp-Env-API_KEY": "per-request"}) as c:
            assert whoami(await c.call_tool("whoami", {}))["api_key"] == "per-request"
        for _ in range(200):
            if len(events) >= 10:
                break
            await asyncio.sleep(0.02)
        calls = [e for e in events if e["server_slug"] == "keyed"]
        by_source = {}
        for e in calls:
            by_source.setdefault((e["key_source"], e["metered"], e["status"]), 0)
            by_source[(e["key_source"], e["metered"], e["status"])] += 1
        assert by_source[("system", True, "ok")] == 2
        assert by_source[("system", False, "refused")] == 3
        assert by_source[("vault", False, "ok")] == 4
        assert by_source[("request", False, "ok")] == 1
        assert all("arguments" not in e and "bob-own-key" not in json.dumps(e) for e in calls)
    finally:
        await sub.unsubscribe()
        await nc.close()


async def _append(events, msg):
    events.extend(json.loads(msg.data)["calls"])  # one mcp.call.batch message: the calls of one interval


# the key cache outlives the test however slow the machine (it asserts the vault is asked once per user)
@pytest.mark.parametrize("stack", [{"key_cache_ttl_seconds": 3600.0}], indirect=True)
@pytest.mark.parametrize("kind,rounds,width", [("both", 25, 10), ("legacy", 10, 10)])
async def test_two_users_1000_interleaved_calls_never_cross(stack, both_upstream, legacy_upstream, kind, rounds,
                                                            width):
    """1000 calls (4 clients x 250) of two users with different vault keys, interleaved, in both
    client eras; through a 2026-07-28 upstream (per-request credentials) and through a 2025 upstream
    (pooled upstream sessions)."""
    await stack.deploy("keyed", both_upstream if kind == "both" else legacy_upstream, spec=SPEC)
    await set_quota(stack, None)
    stack.auth.vault[(str(USERS["alice"]), "keyed")] = {"API_KEY": "alice-secret"}
    stack.auth.vault[(str(USERS["bob"]), "keyed")] = {"API_KEY": "bob-secret"}
    seen: dict[str, list[str]] = {"alice": [], "bob": []}

    async def user(name: str, mode: str) -> None:
        async with mcp_client(stack.url + "/mcp/keyed", bearer(name), mode=mode) as c:
            async def one() -> None:
                seen[name].append(whoami(await c.call_tool("whoami", {}))["api_key"])
            for _ in range(rounds * (10 // width)):
                await asyncio.gather(*(one() for _ in range(width)))

    async with asyncio.timeout(120):
        await asyncio.gather(user("alice", "legacy"), user("bob", "auto"), user("alice", "auto"),
                             user("bob", "legacy"))
    assert len(seen["alice"]) == len(seen["bob"]) == 2 * rounds * 10
    assert set(seen["alice"]) == {"alice-secret"} and set(seen["bob"]) == {"bob-secret"}
    # warm caches: the vault is asked once per user, not per call
    assert stack.auth.calls <= 4 and stack.auth.refused == 0  # each with the gateway's service credential
    if kind == "legacy":  # pooled: one upstream session per (user, key), not per call or client session
        assert 2 <= stack.mcp.upstream.opened <= 4


async def test_saved_key_applies_at_once_through_secret_changed(stack, both_upstream):
    """The key cache lives 30 s here; auth's ``user.secret_changed`` drops it for that user and server,
    so a key saved (or deleted) in the vault is used by the very next call, and other users' warm
    entries stay."""
    from wemcp.common.events.users import SecretChanged

    await stack.deploy("keyed", both_upstream, spec=SPEC)
    await set_quota(stack, None)
    alice, bob = str(USERS["alice"]), str(USERS["bob"])
    stack.auth.vault[(alice, "keyed")] = {"API_KEY": "alice-old"}
    stack.auth.vault[(bob, "keyed")] = {"API_KEY": "bob-key"}
    async with mcp_client(stack.url + "/mcp/keyed", bearer("alice")) as a, \
            mcp_client(stack.url + "/mcp/keyed", bearer("bob")) as b:
        assert whoami(await a.call_tool("whoami", {}))["api_key"] == "alice-old"
        assert whoami(await b.call_tool("whoami", {}))["api_key"] == "bob-key"
        stack.auth.vault[(alice, "keyed")] = {"API_KEY": "alice-new"}
        assert whoami(await a.call_tool("whoami", {}))["api_key"] == "alice-old"  # cached: no event yet
        lookups = stack.mcp.keys.lookups
        await stack.publish(SecretChanged(user_id=USERS["alice"], server="keyed", name="API_KEY"))

        async def new_key() -> bool:
            return whoami(await a.call_tool("whoami", {}))["api_key"] == "alice-new"

        await wait_for(new_key, timeout=1.0)
        assert whoami(await b.call_tool("whoami", {}))["api_key"] == "bob-key"
        assert stack.mcp.keys.lookups - lookups <= 3  # alice's vault (+ OAuth) re-read; bob's entry untouched
        # deleted: the system key applies again
        del stack.auth.vault[(alice, "keyed")]
        await stack.publish(SecretChanged(user_id=USERS["alice"], server="keyed", name="API_KEY", action="deleted"))

        async def system_again() -> bool:
            return whoami(await a.call_tool("whoami", {}))["api_key"] == "system-key-0001"

        await wait_for(system_again, timeout=1.0)


async def test_own_key_inputs_are_derived_and_survive_the_route_snapshot():
    """``Route.needs`` (what own values must cover): required secrets and required header
    placeholders; recomputed when a stored route is loaded, so routes stored before it existed get it."""
    from wemcp.gateway.routes import Route, RouteTable

    route = RouteTable().apply("server.submitted", {"slug": "pasted", "spec": {"remotes": [{
        "type": "streamable-http", "url": "https://mcp.example.com/{ACCOUNT}/mcp", "headers": [
            {"name": "X-Api-Key", "value": "{API_KEY}", "isSecret": True},
            {"name": "X-Tenant", "value": "{TENANT}", "isSecret": False, "isRequired": True},
            {"name": "X-Trace", "value": "{TRACE}", "isSecret": False, "isRequired": False}]}]}})
    assert route is not None and route.needs == {"ACCOUNT", "API_KEY", "TENANT"}
    assert "needs" not in json.loads(route.to_json())
    assert Route.from_json(route.to_json()).needs == route.needs


@pytest.mark.parametrize("stack", [{"environment": "production", "mcp_allow_anonymous": True}], indirect=True)
async def test_anonymous_calls_can_be_enabled_in_production(stack, both_upstream):
    await stack.deploy("plain", both_upstream)
    async with httpx.AsyncClient() as h:
        r = await h.post(stack.url + "/mcp/plain", headers={"mcp-protocol-version": "2026-07-28"},
                         json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                             "name": "echo", "arguments": {"text": "x"}, "_meta": {
                                 "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                 "io.modelcontextprotocol/clientCapabilities": {}}}})
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-limit"] == "1000"  # metered, in the caller's own (address) bucket
    assert await stack.mcp.quota.used_today("anon:127.0.0.1", [("server", "plain")]) == [1]
