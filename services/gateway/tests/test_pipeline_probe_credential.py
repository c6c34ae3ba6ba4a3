"""Health probes through the MCP router: the crawler's service credential (verified, never a bare
header) lets a probe initialize and list tools with anonymous calls off; it can never call a tool,
so nothing is metered, counted or logged; any other assertion is a 401; bundles and the REST
routes refuse it."""

from __future__ import annotations

import uuid
from typing import Any

import httpx2 as httpx
import pytest

from services.gateway.tests.gateway_testkit import Stack
from wemcp.common.identity import Identity
from wemcp.common.trust import KeyRing, PlatformHeaders, platform_headers

OFF = [{"mcp_allow_anonymous": False}]
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def probe() -> dict[str, str]:
    return {**PlatformHeaders("gateway", issuer="crawler"), **ACCEPT}


async def _records(stack: Stack) -> list[Any]:
    seen: list[Any] = []
    recorder = stack.mcp.recorder
    original = recorder.record

    def spy(rec: Any) -> None:
        seen.append(rec)
        original(rec)
    recorder.record = spy
    return seen


@pytest.mark.parametrize("stack", OFF, indirect=True)
async def test_a_probe_lists_tools_but_never_calls_one(stack: Stack, both_upstream: str) -> None:
    await stack.deploy("probed", both_upstream)
    seen = await _records(stack)
    url = f"{stack.url}/mcp/probed"
    async with httpx.AsyncClient(timeout=30) as c:
        assert (await c.post(url, json=INIT, headers=ACCEPT)).status_code == 401  # anonymous is off
        r = await c.post(url, json=INIT, headers=probe())
        assert r.status_code == 200, r.text
        sid = r.headers["mcp-session-id"]
        h = {**probe(), "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
        r = await c.post(url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=h)
        assert r.status_code == 200 and {t["name"] for t in r.json()["result"]["tools"]} >= {"echo", "add"}
        r = await c.post(url, json={"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                    "params": {"name": "echo", "arguments": {"text": "hi"}}}, headers=h)
        assert r.json()["error"]["code"] == -32601 and "probe" in r.json()["error"]["message"]
        # a probe's session is its own: without the credential the same session id is unknown
        r = await c.post(url, json={"jsonrpc": "2.0", "id": 4, "method": "tools/list"},
                         headers={**ACCEPT, "Mcp-Session-Id": sid})
        assert r.status_code == 401
    assert seen == []  # nothing recorded: not metered, not counted, not in the request logs


@pytest.mark.parametrize("stack", OFF, indirect=True)
async def test_other_assertions_are_refused(stack: Stack, both_upstream: str) -> None:
    await stack.deploy("probed2", both_upstream)
    url = f"{stack.url}/mcp/probed2"
    forged = KeyRing.parse("k1:not-the-platform-key-0123456789").sign(
        {"iss": "crawler", "aud": "gateway", "iat": 2_000_000_000, "exp": 2_000_000_060})
    user = Identity(uuid.UUID(int=5), "user")  # type: ignore[arg-type]
    cases = {
        "another service": platform_headers("gateway", issuer="deployer"),
        "a user's assertion": platform_headers("gateway", user, issuer="crawler"),
        "another audience": platform_headers("catalog", issuer="crawler"),
        "forged": {"x-wemcp-assertion": forged},
        "garbage": {"x-wemcp-assertion": "v1.x.y.z"},
    }
    async with httpx.AsyncClient(timeout=30) as c:
        for name, hdr in cases.items():
            r = await c.post(url, json=INIT, headers={**hdr, **ACCEPT})
            assert r.status_code == 401, name
            assert r.headers["content-type"].startswith("application/problem+json"), name
        # the credential opens only /mcp/<slug>: not the REST tool routes, not bundles
        r = await c.get(f"{stack.url}/api/v1/servers/probed2/tools", headers=probe())
        assert r.status_code in (403, 404), r.text
        r = await c.post(f"{stack.url}/mcp/bundles/{uuid.uuid4()}", json=INIT, headers=probe())
        assert r.status_code == 403, r.text
