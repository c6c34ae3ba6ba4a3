"""What a hosted server says outside any call — list_changed, resources/updated after
resources/subscribe — reaches the 2025 client sessions' GET streams through the gateway: the gateway
listens on its pooled upstream session's GET stream on the deployer's bridge and relays each message
to the client sessions on it (resources/updated only to those that subscribed to that resource,
never to another user)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx2 as httpx
import pytest

from services.gateway.tests.gateway_testkit import bearer
from wemcp.testkit.hosted import WATCH
from wemcp.testkit.upstream import hosted_bridge

pytestmark = pytest.mark.asyncio
ACCEPT = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-11-25"}


async def open_session(h: httpx.AsyncClient, url: str, user: str) -> dict[str, str]:
    r = await h.post(url, headers={**ACCEPT, **bearer(user)}, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
    assert r.status_code == 200, r.text
    headers = {**ACCEPT, **bearer(user), "mcp-session-id": r.headers["mcp-session-id"]}
    r = await h.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert r.status_code == 202
    return headers


async def rpc(h: httpx.AsyncClient, url: str, headers: dict[str, str], method: str, params: dict[str, Any]) -> Any:
    r = await h.post(url, headers=headers, json={"jsonrpc": "2.0", "id": 5, "method": method, "params": params})
    assert r.status_code == 200, r.text
    return r.json()


async def listen(h: httpx.AsyncClient, url: str, headers: dict[str, str], into: list[dict[str, Any]],
                 ready: asyncio.Event) -> None:
    async with h.stream("GET", url, headers=headers) as r:
        assert r.status_code == 200
        ready.set()
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                into.append(json.loads(line[6:]))


async def test_list_changed_and_resource_updates_reach_the_sessions_get_streams(stack, tmp_path):
    (tmp_path / "watch.py").write_text(WATCH)
    async with hosted_bridge("watch", argv=[sys.executable, str(tmp_path / "watch.py")], root=tmp_path) as bridge:
        await stack.deploy("watch", bridge, versions=["2025-11-25", "2026-07-28"])
        url = stack.url + "/mcp/watch"
        async with httpx.AsyncClient(timeout=30) as h:
            subscriber = await open_session(h, url, "alice")
            other = await open_session(h, url, "alice")  # alice, not subscribed
            bob = await open_session(h, url, "bob")
            caller = await open_session(h, url, "alice")
            assert (await rpc(h, url, subscriber, "resources/subscribe", {"uri": "watch://a"}))["result"] == {}
            got: list[list[dict[str, Any]]] = [[], [], []]
            ready = [asyncio.Event() for _ in got]
            tasks = [asyncio.create_task(listen(h, url, hd, got[i], ready[i]))
                     for i, hd in enumerate((subscriber, other, bob))]
            try:
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 10)
                # the gateway's listener on the bridge comes up on its own: the server speaks until heard
                async def heard(tool: str, args: dict[str, Any], pred: Any) -> None:
                    while not pred():
                        r = await rpc(h, url, caller, "tools/call", {"name": tool, "arguments": args})
                        assert not r["result"].get("isError"), r
                        for _ in range(10):
                            if pred():
                                return
                            await asyncio.sleep(0.05)

                def methods(i: int) -> set[str]:
                    return {m["method"] for m in got[i]}

                await asyncio.wait_for(heard("touch", {"uri": "watch://a"},
                                             lambda: "notifications/resources/updated" in methods(0)), 30)
                await asyncio.wait_for(heard("grow", {}, lambda: all(
                    "notifications/tools/list_changed" in methods(i) for i in range(3))), 30)
                assert {m["params"]["uri"] for m in got[0] if m["method"].endswith("updated")} == {"watch://a"}
                # the server's list changed for everyone; the update only for who subscribed
                assert methods(1) == methods(2) == {"notifications/tools/list_changed"}
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
