"""Bundles: a user's chosen servers served as one MCP server at ``/mcp/bundles/{id}``, created the way
the web frontend does it (``POST /api/v1/bundles``) and used with the official client in both eras."""

from __future__ import annotations

import json

import httpx2 as httpx
import pytest
from mcp.shared.exceptions import MCPError

from services.gateway.tests.gateway_testkit import USERS, bearer, mcp_client, text_of
from wemcp.testkit.upstream import serve_upstream

pytestmark = pytest.mark.asyncio
KEYED = {"packages": [{"registryType": "npm", "identifier": "keyed-test", "version": "1.0.0",
                       "environmentVariables": [{"name": "API_KEY", "isSecret": True, "isRequired": True}]}]}
MODERN = {"mcp-protocol-version": "2026-07-28", "accept": "application/json, text/event-stream"}


async def create_bundle(stack, user: str, servers: list[str]) -> dict:
    async with httpx.AsyncClient() as h:
        r = await h.post(stack.url + "/api/v1/bundles", headers=bearer(user),
                         json={"servers": servers, "name": "my tools"})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["url"] == f"/mcp/bundles/{doc['id']}" and doc["servers"] == servers
    return doc


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_bundle_serves_members_as_one_server(stack, mode):
    """Two servers that both have ``echo``, ``add`` and ``whoami`` (one speaks 2026-07-28, the other
    only 2025): one bundle, prefixed names without collisions, each call routed to its own server
    with that member's key; a disabled member's tools disappear and its calls are refused."""
    async with serve_upstream("both", name="alpha-up") as alpha, serve_upstream("legacy", name="beta-up") as beta:
        await stack.deploy("alpha", alpha, spec=KEYED)
        await stack.deploy("beta", beta, spec=KEYED)
        stack.auth.vault[(str(USERS["alice"]), "alpha")] = {"API_KEY": "alice-alpha-key"}
        stack.auth.vault[(str(USERS["alice"]), "beta")] = {"API_KEY": "alice-beta-key"}
        doc = await create_bundle(stack, "alice", ["alpha", "beta"])
        url = stack.url + doc["url"]

        async with mcp_client(url, bearer("alice"), mode=mode) as c:
            names = [t.name for t in (await c.list_tools()).tools]
            assert len(names) == len(set(names)), names  # no collisions
            assert {"alpha__echo", "beta__echo", "alpha__whoami", "beta__whoami", "alpha__add",
                    "beta__add"} <= set(names)
            assert all(n.split("__", 1)[0] in ("alpha", "beta") for n in names)
            # same tool name on both members: each call reaches its own server, with that member's key
            a = json.loads(text_of(await c.call_tool("alpha__whoami", {})))
            b = json.loads(text_of(await c.call_tool("beta__whoami", {})))
            assert (a["server"], a["api_key"]) == ("alpha-up", "alice-alpha-key")
            assert (b["server"], b["api_key"]) == ("beta-up", "alice-beta-key")
            assert text_of(await c.call_tool("beta__add", {"a": 40, "b": 2})) == "42"
            assert text_of(await c.call_tool("alpha__echo", {"text": f"via {mode}"})) == f"via {mode}"
            with pytest.raises(MCPError) as e:
                await c.call_tool("gamma__echo", {"text": "x"})  # not a member
            assert e.value.code == -32602

            await stack.disable("beta")
            await stack.wait_route("beta", lambda r: not r.enabled)
            names = {t.name for t in (await c.list_tools(cache_mode="bypass")).tools}
            assert "alpha__echo" in names and not any(n.startswith("beta__") for n in names), names
            with pytest.raises(MCPError) as e:
                await c.call_tool("beta__echo", {"text": "x"})
            assert "disabled" in e.value.message
            assert text_of(await c.call_tool("alpha__echo", {"text": "still"})) == "still"

            await stack.enable("beta")
            await stack.wait_route("beta", lambda r: r.enabled)
            assert text_of(await c.call_tool("beta__echo", {"text": "back"})) == "back"


async def test_bundle_belongs_to_its_owner(stack, both_upstream):
    await stack.deploy("alpha", both_upstream)
    doc = await create_bundle(stack, "alice", ["alpha"])
    url = stack.url + doc["url"]
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    async with httpx.AsyncClient() as h:
        ok = await h.post(url, headers={**MODERN, **bearer("alice")}, json=body)
        assert ok.status_code == 200 and {t["name"] for t in ok.json()["result"]["tools"]} >= {"alpha__echo"}
        # someone else's bundle: refused in both eras, and not even readable over REST
        for headers, msg in (({**MODERN, **bearer("bob")}, body),
                             ({"accept": MODERN["accept"], **bearer("bob")}, init)):
            r = await h.post(url, headers=headers, json=msg)
            assert r.status_code == 403, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
        r = await h.post(url, headers=MODERN, json=body)  # anonymous
        assert r.status_code == 403
        r = await h.get(stack.url + f"/api/v1/bundles/{doc['id']}", headers=bearer("bob"))
        assert r.status_code == 404
        r = await h.get(stack.url + f"/api/v1/bundles/{doc['id']}", headers=bearer("alice"))
        assert r.status_code == 200 and r.json()["servers"] == ["alpha"]
        # an unknown bundle, and bundles that cannot be made
        r = await h.post(stack.url + "/mcp/bundles/nosuchbundle", headers={**MODERN, **bearer("alice")}, json=body)
        assert r.status_code == 404
        r = await h.post(stack.url + "/api/v1/bundles", json={"servers": ["alpha"]})
        assert r.status_code == 401
        for servers in (["a__b"], ["alpha", "alpha"], []):
            r = await h.post(stack.url + "/api/v1/bundles", headers=bearer("alice"), json={"servers": servers})
            assert r.status_code in (400, 422), (servers, r.text)
    with pytest.raises(ExceptionGroup) as e:  # the official client cannot even connect
        async with mcp_client(url, bearer("bob")) as c:
            await c.list_tools()
    assert e.group_contains(MCPError, depth=2)
