"""The MCP router end to end: the official mcp client, both eras on both sides."""

from __future__ import annotations

import asyncio
import time

import httpx2 as httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from services.gateway.tests.gateway_testkit import text_of

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("upstream_kind", ["both", "legacy"])
async def test_both_client_eras_list_and_call(stack, both_upstream, legacy_upstream, upstream_kind):
    url = both_upstream if upstream_kind == "both" else legacy_upstream
    await stack.deploy("echo", url)
    for path in ("/mcp/echo", "/mcp/echo/"):
        for mode in ("auto", "legacy"):
            async with Client(stack.url + path, mode=mode) as c:
                tools = await c.list_tools()
                assert {"echo", "add", "whoami"} <= {t.name for t in tools.tools}
                r = await c.call_tool("add", {"a": 2, "b": 40})
                assert text_of(r) == "42"
                r = await c.call_tool("echo", {"text": f"{mode}{path}"})
                assert text_of(r) == f"{mode}{path}"
    route = stack.mcp.routes.get("echo")
    assert route.modern is (upstream_kind == "both")


async def test_no_redirect_on_trailing_slash(stack, both_upstream):
    await stack.deploy("slash", both_upstream)
    async with httpx.AsyncClient() as h:
        for path in ("/mcp/slash", "/mcp/slash/"):
            r = await h.post(stack.url + path, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
                headers={"accept": "application/json, text/event-stream"})
            assert r.status_code == 200, r.text
            assert r.headers["mcp-session-id"]
            assert r.json()["result"]["protocolVersion"] == "2025-06-18"


async def test_disabled_server_refused_within_a_second(stack, both_upstream):
    await stack.deploy("gone", both_upstream)
    async with Client(stack.url + "/mcp/gone", mode="legacy") as c:
        assert text_of(await c.call_tool("echo", {"text": "before"})) == "before"
        t0 = time.monotonic()
        await stack.disable("gone")
        async with httpx.AsyncClient() as h:
            while True:
                r = await h.post(stack.url + "/mcp/gone", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                 headers={"mcp-protocol-version": "2026-07-28"})
                if r.status_code == 403:
                    break
                assert time.monotonic() - t0 < 1.0, "still served after 1 s"
                await asyncio.sleep(0.01)
        assert time.monotonic() - t0 < 1.0
        assert "disabled" in r.json()["detail"]
        with pytest.raises(MCPError):
            await c.call_tool("echo", {"text": "after"})
    await stack.enable("gone")
    await stack.wait_route("gone", lambda r: r.enabled)
    async with Client(stack.url + "/mcp/gone") as c:
        assert text_of(await c.call_tool("echo", {"text": "again"})) == "again"


async def test_unknown_server_is_404(stack):
    async with httpx.AsyncClient() as h:
        r = await h.post(stack.url + "/mcp/nope", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_a_stdio_local_server_is_listed_but_not_called(stack):
    """``"transport": "stdio-local"``: the deployer lists it (backend ``unhosted``, no endpoints);
    the gateway answers 404 with where to run it, not a 503 "not deployed yet" to retry forever."""
    import uuid

    from wemcp.common.events.servers import ServerDeployed, ServerSubmitted

    sid = uuid.uuid4()
    await stack.publish(ServerSubmitted(server_id=sid, slug="on-my-laptop", name="io.test/on-my-laptop",
                                        spec={"packages": [], "remotes": [], "hosting": "local"}))
    await stack.publish(ServerDeployed(server_id=sid, slug="on-my-laptop", endpoints=[], backend="unhosted"))
    await stack.wait_route("on-my-laptop", lambda r: r.kind == "local")
    async with httpx.AsyncClient() as h:
        r = await h.post(stack.url + "/mcp/on-my-laptop", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                         headers={"mcp-protocol-version": "2026-07-28"})
    assert r.status_code == 404 and "runs on its users' machines" in r.json()["detail"], r.text
