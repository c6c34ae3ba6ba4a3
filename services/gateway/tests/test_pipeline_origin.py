"""The spec's Origin rule on /mcp/...: a web page of another origin gets 403 (DNS rebinding: a page
of evil.example whose name resolves to a locally run WeMcp must not call its hosted tools); clients
without Origin and pages of the gateway's own origin are served; ``MCP_ALLOWED_ORIGINS`` adds
origins; ``MCP_ALLOWED_HOSTS``, where set, refuses any other Host."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx2 as httpx
import pytest

pytestmark = pytest.mark.asyncio
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "origin", "version": "1"}}}
ACCEPT = {"accept": "application/json, text/event-stream"}


async def status(url: str, headers: dict[str, str], method: str = "POST") -> int:
    async with httpx.AsyncClient(timeout=10) as http:
        if method == "GET":
            async with http.stream("GET", url, headers=headers) as r:
                return r.status_code
        r = await http.post(url, headers={**ACCEPT, **headers}, json=INIT)
        if r.status_code == 403:
            assert r.headers["content-type"] == "application/problem+json", r.text
            assert "Origin" in r.json()["detail"] or "Host" in r.json()["detail"], r.text
        return r.status_code


async def test_other_origins_are_refused_by_default(stack, both_upstream):
    await stack.deploy("o", both_upstream)
    url = f"{stack.url}/mcp/o"
    own = "http://" + urlsplit(stack.url).netloc
    assert await status(url, {}) == 200  # no Origin: not a browser
    assert await status(url, {"origin": own}) == 200  # the gateway's own pages
    assert await status(url, {"origin": "http://evil.example.com"}) == 403
    assert await status(url, {"origin": "null"}) == 403  # sandboxed frames, file:// pages
    assert await status(f"{stack.url}/mcp/o/sse", {"origin": "http://evil.example.com"}, "GET") == 403
    assert await status(f"{stack.url}/mcp/o/messages?session_id=x", {"origin": "http://evil.example.com"}) == 403
    assert await status(f"{stack.url}/mcp/bundles/b1", {"origin": "http://evil.example.com"}) == 403
    # DNS rebinding: the page's origin and the Host header agree (both evil.example.com), so only a
    # Host allow-list tells it apart; none is configured here, which is why deployments set one
    assert await status(url, {"origin": "http://evil.example.com", "host": "evil.example.com"}) == 200


@pytest.mark.parametrize("stack", [{"mcp_allowed_origins": ["https://app.example"],
                                    "mcp_allowed_hosts": ["localhost", "127.0.0.1", "[::1]"]}], indirect=True)
async def test_allow_lists(stack, both_upstream):
    await stack.deploy("o", both_upstream)
    url = f"{stack.url}/mcp/o"
    port = urlsplit(stack.url).port
    assert await status(url, {"origin": "https://app.example"}) == 200
    assert await status(url, {"origin": "https://other.example"}) == 403
    assert await status(url, {"host": f"localhost:{port}", "origin": f"http://localhost:{port}"}) == 200
    assert await status(url, {"host": f"[::1]:{port}"}) == 200
    # the rebinding attack: Host and Origin both name the attacker's domain
    assert await status(url, {"host": "evil.example.com", "origin": "http://evil.example.com"}) == 403
    assert await status(url, {"host": "evil.example.com"}) == 403
