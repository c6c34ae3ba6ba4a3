"""The /mcp/{slug} fast path (wiring.McpFastPath): same answers and the same middlewares (request id,
access log) as the full stack; everything else still takes the full stack."""

from __future__ import annotations

import httpx2 as httpx
import pytest

from services.gateway.tests.gateway_testkit import bearer

pytestmark = pytest.mark.asyncio
MODERN = {"mcp-protocol-version": "2026-07-28", "accept": "application/json, text/event-stream",
          "content-type": "application/json", "mcp-method": "tools/call", "mcp-name": "echo"}
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


async def test_fast_path_keeps_the_middlewares_and_leaves_other_paths_alone(stack, both_upstream):
    await stack.deploy("fast", both_upstream)
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "quick"}, "_meta": META}}
    async with httpx.AsyncClient(headers=bearer("alice"), timeout=30) as h:
        for path in ("/mcp/fast", "/mcp/fast/"):
            r = await h.post(stack.url + path, json=call, headers={**MODERN, "x-request-id": "req-fast-1"})
            assert r.status_code == 200 and r.json()["result"]["content"][0]["text"] == "quick", r.text
            assert r.headers["x-request-id"] == "req-fast-1"  # RequestContextMiddleware ran
        # identity still decides: a bad credential is a 401 problem
        r = await h.post(stack.url + "/mcp/fast", json=call, headers={**MODERN, "authorization": "Bearer nope"})
        assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
        assert "x-request-id" in r.headers
        # other methods on the path: the framework's 405, as before
        r = await h.put(stack.url + "/mcp/fast", json=call)
        assert r.status_code == 405
        # deeper paths are not taken by the fast path (the legacy SSE messages endpoint answers)
        r = await h.post(stack.url + "/mcp/fast/messages?session_id=nope", json=call)
        assert r.status_code == 404 and "x-request-id" in r.headers
        # an exception nobody caught: logged, 500 problem+json (as the framework's error middleware did)
        adapter = stack.mcp.router.streamable_http  # the Streamable HTTP adapter (streamable.py)

        async def boom(*args: object, **kwargs: object) -> None:
            raise RuntimeError("boom")

        adapter.handle = boom
        try:
            r = await h.post(stack.url + "/mcp/fast", json=call, headers=MODERN)
            assert r.status_code == 500 and r.json()["title"] == "Internal Server Error"
        finally:
            del adapter.handle
