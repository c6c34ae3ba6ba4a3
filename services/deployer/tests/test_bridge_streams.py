"""A 2025 session's GET stream on the deployer's bridge: what a hosted server says outside any call
(list_changed, resources/updated after resources/subscribe) reaches the sessions on its child —
resources/updated only the sessions that subscribed to that resource — and the stream answers only
the gateway's credential."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from services.deployer.tests.deployer_testkit import bridge_headers
from wemcp.deployer import sandbox
from wemcp.deployer.bridge import Bridge, Hosted
from wemcp.deployer.child import Command
from wemcp.testkit.hosted import WATCH

pytestmark = pytest.mark.asyncio
ACCEPT = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-11-25"}


@contextlib.asynccontextmanager
async def watch_bridge(tmp_path: Path) -> AsyncIterator[str]:
    (tmp_path / "watch.py").write_text(WATCH)
    bridge = Bridge(caps=sandbox.Capabilities("restricted", own_uid=False, netns=False), limits=sandbox.Limits(),
                    run_dir=tmp_path / "run")
    bridge.register(Hosted(slug="watch", make_command=lambda env: Command(
        argv=[sys.executable, str(tmp_path / "watch.py")], root=Path(tmp_path), env={}), allowed_env=set()))
    await bridge.start()
    try:
        yield bridge.endpoint("watch")
    finally:
        await bridge.close()


async def rpc(h: httpx.AsyncClient, url: str, sid: str | None, method: str, params: dict[str, Any],
              req_id: int = 1) -> httpx.Response:
    headers = {**ACCEPT, **({"mcp-session-id": sid} if sid else {})}
    return await h.post(url, headers=headers, json={"jsonrpc": "2.0", "id": req_id, "method": method,
                                                    "params": params})


async def open_session(h: httpx.AsyncClient, url: str) -> str:
    r = await rpc(h, url, None, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                               "clientInfo": {"name": "raw", "version": "1"}}, 0)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    r = await h.post(url, headers={**ACCEPT, "mcp-session-id": sid},
                     json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert r.status_code == 202
    return sid


async def listen(h: httpx.AsyncClient, url: str, sid: str, into: list[dict[str, Any]],
                 ready: asyncio.Event) -> None:
    async with h.stream("GET", url, headers={**ACCEPT, "mcp-session-id": sid}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            ready.set()
            if line.startswith("data: "):
                into.append(json.loads(line[6:]))


async def test_messages_outside_calls_reach_the_sessions_get_streams(tmp_path):
    async with watch_bridge(tmp_path) as url, httpx.AsyncClient(timeout=30, headers=bridge_headers(url)) as h:
        a = await open_session(h, url)
        b = await open_session(h, url)
        caller = await open_session(h, url)
        assert (await rpc(h, url, a, "resources/subscribe", {"uri": "watch://a"})).json()["result"] == {}
        assert (await rpc(h, url, b, "resources/subscribe", {"uri": "watch://b"})).json()["result"] == {}
        got: dict[str, list[dict[str, Any]]] = {a: [], b: []}
        ready = {a: asyncio.Event(), b: asyncio.Event()}
        tasks = [asyncio.create_task(listen(h, url, s, got[s], ready[s])) for s in (a, b)]
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready.values())), 10)
            # a third session's call makes the server speak; the call's own caller hears nothing of it
            r = await rpc(h, url, caller, "tools/call", {"name": "touch", "arguments": {"uri": "watch://a"}})
            assert r.json()["result"]["content"][0]["text"] == "touched"
            r = await rpc(h, url, caller, "tools/call", {"name": "grow", "arguments": {}})
            assert "notifications" not in r.text
            await asyncio.wait_for(_until(lambda: len(got[a]) == 2 and len(got[b]) == 1), 10)
            assert [m["method"] for m in got[a]] == ["notifications/resources/updated",
                                                     "notifications/tools/list_changed"]
            assert got[a][0]["params"]["uri"] == "watch://a"
            # b subscribed to another resource: only the list change
            assert [m["method"] for m in got[b]] == ["notifications/tools/list_changed"]

            # unsubscribed: no more updates of that resource
            assert (await rpc(h, url, a, "resources/unsubscribe", {"uri": "watch://a"})).status_code == 200
            await rpc(h, url, caller, "tools/call", {"name": "touch", "arguments": {"uri": "watch://b"}})
            await asyncio.wait_for(_until(lambda: len(got[b]) == 2), 10)
            assert got[b][1]["params"]["uri"] == "watch://b" and len(got[a]) == 2
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_get_stream_needs_the_gateways_credential_and_a_session(tmp_path):
    async with watch_bridge(tmp_path) as url, httpx.AsyncClient(timeout=30, headers=bridge_headers(url)) as h:
        sid = await open_session(h, url)
        async with httpx.AsyncClient(timeout=30) as anonymous:  # any other local process
            r = await anonymous.get(url, headers={**ACCEPT, "mcp-session-id": sid})
            assert r.status_code == 401
        other = url.replace("/s/watch/", "/s/other/")  # the credential of another slug
        r = await h.get(other, headers={**ACCEPT, "mcp-session-id": sid})
        assert r.status_code == 401
        for headers in ({}, {"mcp-session-id": "nope"}):
            r = await h.get(url, headers={**ACCEPT, **headers})
            assert r.status_code == 405
        # the session's DELETE ends its GET stream (the response completes)
        async with h.stream("GET", url, headers={**ACCEPT, "mcp-session-id": sid}) as r:
            lines = r.aiter_lines()
            assert (await anext(lines)).startswith(":")
            assert (await h.delete(url, headers={"mcp-session-id": sid})).status_code == 204

            async def drain() -> list[str]:
                return [line async for line in lines]
            rest = await asyncio.wait_for(drain(), 10)  # ends, rather than keep-alives for ever
        assert all(not line.startswith("data:") for line in rest)


async def _until(pred: Any) -> None:
    while not pred():
        await asyncio.sleep(0.02)
