"""Scale to zero (issue 15 part 5): idle children stop and start on the next call; a call in flight or
an open stream keeps a child; a stopped child's session answers 404 and the official client
initialises again; a deployment's own idle time, bounded."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from mcp import Client
from mcp.client.sse import sse_client

from services.deployer.tests.deployer_testkit import bridge_client, bridge_headers, wait_for
from wemcp.deployer.bridge import Bridge
from wemcp.deployer.idle import IdlePolicy
from wemcp.deployer.spec import SpecError, parse_spec
from wemcp.testkit.hosted import BOOT, host, local_bridge


@pytest.fixture
async def bridge(tmp_path: Path) -> Any:
    (tmp_path / "server.py").write_text(BOOT)
    b = local_bridge(tmp_path / "run", idle_seconds=60.0, reap_interval=3600)
    await b.start()
    try:
        yield b
    finally:
        await b.close()


def _host(b: Bridge, tmp_path: Path, slug: str = "idle", idle_seconds: float | None = None) -> str:
    return host(b, slug, [sys.executable, str(tmp_path / "server.py")], tmp_path, idle_seconds=idle_seconds)


def _age(b: Bridge, slug: str, seconds: float) -> None:
    """Make every child of ``slug`` look unused for ``seconds`` (instead of waiting that long)."""
    for child in b.hosted[slug].children.values():
        child.last_used -= seconds
    for key in list(b.idle._touched):
        if key[0] == slug:
            b.idle._touched[key] -= seconds


def _text(result: Any) -> str:
    return result.content[0].text


async def test_idle_child_stops_its_session_gets_404_and_the_client_initialises_again(bridge, tmp_path):
    url = _host(bridge, tmp_path)
    async with bridge_client(url, mode="legacy") as c:
        first = _text(await c.call_tool("boot", {}))
        assert len(bridge.sessions) == 1
        sid = next(iter(bridge.sessions))

        _age(bridge, "idle", 30)  # younger than the idle time: kept
        assert await bridge.reap_once() == 0
        assert _text(await c.call_tool("boot", {})) == first

        _age(bridge, "idle", 61)
        assert await bridge.reap_once() == 1
        assert not bridge.hosted["idle"].children and not bridge.sessions

        # the stale session: 404 at the HTTP level, an error for the official client
        async with httpx.AsyncClient(headers=bridge_headers(url)) as http:
            r = await http.post(url, json={"jsonrpc": "2.0", "id": 7, "method": "tools/list"},
                                headers={"mcp-session-id": sid, "accept": "application/json, text/event-stream"})
        assert r.status_code == 404
        with pytest.raises(Exception, match="session"):
            await c.call_tool("boot", {})
    assert not bridge.hosted["idle"].children  # a refused stale request starts nothing

    async with bridge_client(url, mode="legacy") as c:  # initialising again starts a fresh child
        again = _text(await c.call_tool("boot", {}))
    assert again != first
    assert len(bridge.hosted["idle"].children) == 1


async def test_a_call_in_flight_keeps_its_child(bridge, tmp_path):
    url = _host(bridge, tmp_path)
    gate = tmp_path / "gate"
    async with bridge_client(url, mode="legacy") as c:
        first = _text(await c.call_tool("boot", {}))
        import asyncio

        call = asyncio.create_task(c.call_tool("wait_for_file", {"path": str(gate)}))
        child = next(iter(bridge.hosted["idle"].children.values()))
        await wait_for(lambda: _true(child.in_flight == 1), timeout=30)
        _age(bridge, "idle", 3600)
        assert await bridge.reap_once() == 0  # busy: not idle however old its last call
        gate.write_text("go")
        assert _text(await call) == first
        _age(bridge, "idle", 61)
        assert await bridge.reap_once() == 1


async def test_an_open_stream_keeps_its_child(bridge, tmp_path):
    url = _host(bridge, tmp_path)
    sse = url.removesuffix("/mcp") + "/sse"
    async with Client(sse_client(sse, headers=bridge_headers(sse)), mode="legacy") as c:
        first = _text(await c.call_tool("boot", {}))
        _age(bridge, "idle", 3600)
        assert await bridge.reap_once() == 0  # the SSE stream is open
        assert _text(await c.call_tool("boot", {})) == first
    await wait_for(lambda: _true(not bridge.idle.streams), timeout=30)  # the stream closed
    assert await bridge.reap_once() == 0  # closing the stream was activity: the idle time starts there
    _age(bridge, "idle", 61)
    assert await bridge.reap_once() == 1


async def test_a_deployment_has_its_own_idle_time_within_bounds(bridge, tmp_path):
    short = _host(bridge, tmp_path, "short", idle_seconds=10)
    long_ = _host(bridge, tmp_path, "long", idle_seconds=3 * 86400)  # clamped to the bridge's maximum
    for url in (short, long_):
        async with bridge_client(url, mode="legacy") as c:
            await c.call_tool("boot", {})
    _age(bridge, "short", 11)
    _age(bridge, "long", 11)
    assert await bridge.reap_once() == 1  # the default (60 s) would have kept "short"
    assert not bridge.hosted["short"].children and bridge.hosted["long"].children
    _age(bridge, "long", 86400)
    assert await bridge.reap_once() == 1

    policy = IdlePolicy(600, min_seconds=1, max_seconds=3600)
    assert policy.seconds_for(None) == 600 and policy.seconds_for(7200) == 3600 and policy.seconds_for(0) == 1
    assert parse_spec({"packages": [{"registryType": "npm", "identifier": "x", "version": "1"}],
                       "idleSeconds": 120}).idle_seconds == 120
    with pytest.raises(SpecError, match="idleSeconds"):
        parse_spec({"packages": [{"registryType": "npm", "identifier": "x", "version": "1"}], "idleSeconds": 1})


async def _true(value: bool) -> bool:
    return value
