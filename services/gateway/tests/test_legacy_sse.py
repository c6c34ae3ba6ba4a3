"""The legacy SSE transport (2024-11-05): ``GET /mcp/{slug}/sse`` + ``POST /mcp/{slug}/messages``, with
the official SDK's ``sse_client``."""

from __future__ import annotations

import asyncio
import json

import httpx2 as httpx
import pytest
from mcp import Client
from mcp.client.sse import sse_client

from services.gateway.tests.gateway_testkit import USERS, bearer, text_of
from wemcp.devstack.testing import wait_for

pytestmark = pytest.mark.asyncio
KEYED = {"packages": [{"registryType": "npm", "identifier": "keyed-test", "version": "1.0.0",
                       "environmentVariables": [{"name": "API_KEY", "isSecret": True, "isRequired": True}]}]}


def sessions_of(stack, slug: str) -> list:
    return [s for s in stack.mcp.router.sessions.values() if s.target == slug]


@pytest.mark.parametrize("upstream_kind", ["both", "legacy"])
async def test_list_and_call_over_sse(stack, both_upstream, legacy_upstream, upstream_kind):
    await stack.deploy("old", both_upstream if upstream_kind == "both" else legacy_upstream, spec=KEYED)
    stack.auth.vault[(str(USERS["alice"]), "old")] = {"API_KEY": "alice-key"}
    created: list[str] = []
    transport = sse_client(stack.url + "/mcp/old/sse", headers=bearer("alice"), on_session_created=created.append)
    async with Client(transport, mode="legacy") as c:
        assert c.session.server_capabilities is not None
        assert {"echo", "add", "whoami", "slow"} <= {t.name for t in (await c.list_tools()).tools}
        assert text_of(await c.call_tool("add", {"a": 2, "b": 40})) == "42"
        results = await asyncio.gather(*(c.call_tool("echo", {"text": f"m{i}"}) for i in range(20)))
        assert [text_of(r) for r in results] == [f"m{i}" for i in range(20)]  # replies matched by id
        who = json.loads(text_of(await c.call_tool("whoami", {})))
        assert who["api_key"] == "alice-key"
        # one gateway session per SSE connection, carrying what the client negotiated
        (sess,) = sessions_of(stack, "old")
        assert [sess.sid] == created
        assert sess.protocol_version == c.session.protocol_version and sess.client_info["name"]
    if upstream_kind == "legacy":
        # the upstream session was opened once, at the version the client negotiated
        assert stack.mcp.upstream.opened == 1
        assert {k[-1] for k in stack.mcp.upstream.sessions} == {sess.protocol_version}


async def test_keepalive_wrong_session_and_cleanup(stack, both_upstream):
    await stack.deploy("old", both_upstream)
    await stack.deploy("other", both_upstream)
    url = stack.url + "/mcp/old"
    async with httpx.AsyncClient(headers=bearer("alice"), timeout=httpx.Timeout(10.0)) as h:
        async with h.stream("GET", url + "/sse") as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["x-accel-buffering"] == "no"
            lines = r.aiter_lines()
            assert await anext(lines) == "event: endpoint"
            endpoint = (await anext(lines)).removeprefix("data: ")
            assert endpoint.startswith("/mcp/old/messages?session_id=")
            sid = endpoint.split("=", 1)[1]
            assert sid in stack.mcp.router.sessions
            async with asyncio.timeout(5):  # keep-alive comments every 0.5 s in the test stack
                pings = 0
                async for line in lines:
                    if line == ": ping":
                        pings += 1
                        if pings == 2:
                            break
            ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
            ok = await h.post(stack.url + endpoint, json=ping)
            assert ok.status_code == 202
            # unknown ids, an id used on another server's path, none at all: 404
            for bad in ("/mcp/old/messages?session_id=" + "0" * 32, f"/mcp/other/messages?session_id={sid}",
                        "/mcp/old/messages"):
                r2 = await h.post(stack.url + bad, json=ping)
                assert r2.status_code == 404, (bad, r2.text)
            # bad bodies on a good session
            r2 = await h.post(stack.url + endpoint, content=b"{not json")
            assert r2.status_code == 400 and r2.json()["error"]["code"] == -32700
        # the client went away: its session is gone, and so is its id
        await wait_for(lambda: not sessions_of(stack, "old"), timeout=5)
        r2 = await h.post(stack.url + endpoint, json=ping)
        assert r2.status_code == 404


async def test_sdk_client_disconnect_cleans_up(stack, legacy_upstream):
    await stack.deploy("old", legacy_upstream)
    for _ in range(3):
        async with Client(sse_client(stack.url + "/mcp/old/sse", headers=bearer("bob")), mode="legacy") as c:
            assert text_of(await c.call_tool("echo", {"text": "hi"})) == "hi"
            assert len(sessions_of(stack, "old")) == 1
        await wait_for(lambda: not sessions_of(stack, "old"), timeout=5)
    # disabling the server ends open SSE streams
    async with httpx.AsyncClient(headers=bearer("bob"), timeout=httpx.Timeout(10.0)) as h:
        async with h.stream("GET", stack.url + "/mcp/old/sse") as r:
            lines = r.aiter_lines()
            assert await anext(lines) == "event: endpoint"
            await stack.disable("old")
            async with asyncio.timeout(5):
                async for _ in lines:  # ends when the gateway closes the stream
                    pass
    assert not sessions_of(stack, "old")
