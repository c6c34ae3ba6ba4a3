"""Bad input on /mcp/{slug}: clean errors, and the gateway keeps serving everyone else."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest

from services.gateway.tests.gateway_testkit import bearer, mcp_client, text_of

pytestmark = pytest.mark.asyncio
MODERN = {"mcp-protocol-version": "2026-07-28", "accept": "application/json, text/event-stream",
          "content-type": "application/json"}
LEGACY = {"mcp-protocol-version": "2025-11-25", "accept": "application/json, text/event-stream",
          "content-type": "application/json"}
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


async def still_serving(stack) -> None:
    async with mcp_client(stack.url + "/mcp/bad", bearer("alice")) as c:
        assert text_of(await c.call_tool("echo", {"text": "alive"})) == "alive"


@pytest.mark.parametrize("upstream_kind", ["both", "legacy"])
async def test_malformed_oversized_unknown_method(stack, both_upstream, legacy_upstream, upstream_kind):
    await stack.deploy("bad", both_upstream if upstream_kind == "both" else legacy_upstream)
    url = stack.url + "/mcp/bad"
    async with httpx.AsyncClient(headers=bearer("alice"), timeout=30) as h:
        for era in (MODERN, LEGACY):
            r = await h.post(url, content=b'{"jsonrpc": "2.0", "id": 1, "method": ', headers=era)
            assert r.status_code == 400 and r.json()["error"]["code"] == -32700, r.text
            for shape in (b'{"id": 1, "method": "tools/list"}', b'[1, 2]', b'"text"', b'{"jsonrpc": "2.0", "id": [1]}'):
                r = await h.post(url, content=shape, headers=era)
                assert r.status_code == 400 and r.json()["error"]["code"] == -32600, (shape, r.text)
        # oversized
        big = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"a" * (5 * 1024 * 1024) + b'"}}'
        r = await h.post(url, content=big, headers=MODERN)
        assert r.status_code == 413 and r.headers["content-type"].startswith("application/problem+json")

        # an unknown method: the upstream's -32601, passed through (both client eras)
        r = await h.post(url, headers=MODERN, json={"jsonrpc": "2.0", "id": 7, "method": "nope/nothing",
                                                    "params": {"_meta": META}})
        # (the SDK's stateless 2026-07-28 server answers it with HTTP 404; the status passes through too)
        assert r.status_code in (200, 404) and r.json()["id"] == 7 and r.json()["error"]["code"] == -32601, r.text
        init = await h.post(url, headers=LEGACY, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        sid = init.headers["mcp-session-id"]
        r = await h.post(url, headers={**LEGACY, "mcp-session-id": sid},
                         json={"jsonrpc": "2.0", "id": 8, "method": "nope/nothing"})
        assert r.status_code == 200 and r.json()["id"] == 8 and r.json()["error"]["code"] == -32601, r.text
    await still_serving(stack)


async def test_wrong_session_ids_are_404(stack, legacy_upstream):
    await stack.deploy("bad", legacy_upstream)
    url = stack.url + "/mcp/bad"
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}}
    async with httpx.AsyncClient(timeout=30) as h:
        init = await h.post(url, headers={**LEGACY, **bearer("alice")}, json={
            "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        sid = init.headers["mcp-session-id"]
        ok = await h.post(url, headers={**LEGACY, **bearer("alice"), "mcp-session-id": sid}, json=call)
        assert ok.status_code == 200 and ok.json()["result"]["content"][0]["text"] == "x"
        # unknown, and another user's (a session id is bound to its caller)
        for who, s in (("alice", "0" * 32), ("alice", "not-a-session"), ("bob", sid)):
            r = await h.post(url, headers={**LEGACY, **bearer(who), "mcp-session-id": s}, json=call)
            assert r.status_code == 404, (who, s, r.text)
            r = await h.delete(url, headers={**LEGACY, **bearer(who), "mcp-session-id": s})
            assert r.status_code == 404
        # a deleted session is gone; the pooled upstream session it used keeps serving others
        r = await h.delete(url, headers={**LEGACY, **bearer("alice"), "mcp-session-id": sid})
        assert r.status_code == 200
        r = await h.post(url, headers={**LEGACY, **bearer("alice"), "mcp-session-id": sid}, json=call)
        assert r.status_code == 404
    await still_serving(stack)


async def test_slow_loris_is_cut_off_while_others_are_served(stack, both_upstream):
    await stack.deploy("bad", both_upstream)
    u = urlsplit(stack.url)
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"slow"}}}'
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    head = (f"POST /mcp/bad HTTP/1.1\r\nhost: {u.netloc}\r\nauthorization: Bearer test-alice\r\n"
            f"content-type: application/json\r\naccept: application/json, text/event-stream\r\n"
            f"mcp-protocol-version: 2026-07-28\r\ncontent-length: {len(body)}\r\n\r\n").encode()
    writer.write(head)
    await writer.drain()
    t0 = time.monotonic()

    async def trickle() -> None:
        for b in body:  # one byte a second, the behaviour under test
            writer.write(bytes([b]))
            await writer.drain()
            await asyncio.sleep(1.0)

    trickler = asyncio.create_task(trickle())
    try:
        status_line = asyncio.create_task(reader.readline())
        # meanwhile, everyone else is served
        await still_serving(stack)
        assert not status_line.done()
        line = await asyncio.wait_for(status_line, 10)
        elapsed = time.monotonic() - t0
        assert line.split()[1] == b"408", line
        assert elapsed < 2.0 + 3.0  # mcp_body_timeout_seconds=2 in the test stack, plus slack
    finally:
        trickler.cancel()
        writer.close()
    await still_serving(stack)
