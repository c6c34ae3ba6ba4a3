"""Health probes end to end inside one process: the real gateway (its test kit: loopback port, real
NATS and Redis, anonymous calls off), real upstream MCP servers on loopback, and the crawler on the
real Postgres and JetStream. Targets come from ``server.deployed`` on the bus; probes go through the
gateway's MCP endpoint with the crawler's credential; results are ``server.health`` events."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx2 as httpx
import nats
import orjson
import pytest
import pytest_asyncio
from sqlalchemy import func, select, update

from services.gateway.tests.gateway_testkit import Stack, both_upstream, stack  # noqa: F401  (fixtures)
from wemcp.common.events.calls import McpCallCompleted
from wemcp.common.events.servers import Endpoint, ServerDeployed
from wemcp.common.service import Runtime
from wemcp.crawler.config import Settings
from wemcp.crawler.main import SPEC
from wemcp.crawler.models import ProbeResult, ProbeTarget
from wemcp.crawler.probes import _reply, probe_client, probe_due
from wemcp.devstack.infra import free_port
from wemcp.devstack.testing import metric_points, metric_reader, wait_for
from wemcp.testkit.upstream import serve_upstream

OFF = [{"mcp_allow_anonymous": False}]


@pytest_asyncio.fixture
async def crawler(stack: Stack, settings_for: Any, clean_db: None) -> AsyncIterator[Runtime]:  # noqa: F811
    runtime = Runtime(SPEC, settings_for(Settings, gateway_url=stack.url, probe_interval_seconds=1.0,
                                         probe_tick_seconds=0.1, idle_after_seconds=3.0,
                                         idle_probe_interval_seconds=3600, health_report_seconds=0))
    await runtime.open()
    try:
        yield runtime
    finally:
        await runtime.close()


class Health:
    """The server.health events on the bus, as the catalog receives them."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def of(self, slug: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["slug"] == slug]


@pytest_asyncio.fixture
async def health(infra: Any) -> AsyncIterator[Health]:
    h = Health()
    nc = await nats.connect(infra.nats_url)

    async def on(msg: Any) -> None:
        h.events.append(orjson.loads(msg.data))
    await nc.subscribe("server.health", cb=on)
    try:
        yield h
    finally:
        await nc.close()


async def target(runtime: Runtime, slug: str) -> ProbeTarget | None:
    assert runtime.sessions is not None
    async with runtime.sessions() as s:
        return await s.get(ProbeTarget, slug)


async def results(runtime: Runtime, slug: str) -> int:
    assert runtime.sessions is not None
    async with runtime.sessions() as s:
        return int((await s.execute(select(func.count()).where(ProbeResult.slug == slug))).scalar_one())


@pytest.mark.parametrize("stack", OFF, indirect=True)
async def test_probe_up_tools_changed_then_idle_then_woken(stack: Stack, both_upstream: str,  # noqa: F811
                                                           crawler: Runtime, health: Health) -> None:
    sid = await stack.deploy("weather", both_upstream)  # its server.deployed lists no tools
    assert await wait_for(lambda: target(crawler, "weather"), 10)
    async with probe_client(crawler.settings) as client:  # type: ignore[arg-type]
        assert (await probe_due(crawler, client))["weather"] == "up"
        ev = (await wait_for(lambda: health.of("weather") or None, 10))[0]
        assert ev["status"] == "up" and ev["server_id"] == str(sid) and ev["uptime_24h"] == 1.0
        assert ev["p50_ms"] is not None and ev["latency_ms"] > 0
        # the tools differ from the deployment's introspection (none): the probe re-introspected
        assert {t["name"] for t in ev["tools"]} >= {"echo", "add"} and ev["tool_count"] == len(ev["tools"])

        # no call since: scaled to zero by now (idle_after 3 s): "idle", and not probed (not woken)
        await asyncio.sleep(3.1)
        assert crawler.sessions is not None
        async with crawler.sessions() as s, s.begin():
            await s.execute(update(ProbeTarget).where(ProbeTarget.slug == "weather").values(next_probe_at=func.now()))
        before = await results(crawler, "weather")
        assert (await probe_due(crawler, client))["weather"] == "idle"
        assert await results(crawler, "weather") == before  # the server was not contacted
        assert (await wait_for(lambda: [e for e in health.of("weather") if e["status"] == "idle"] or None, 10))
        t = await target(crawler, "weather")
        assert t is not None and (t.next_probe_at - datetime.now(UTC)).total_seconds() > 3000  # probed rarely
        assert (await probe_due(crawler, client)) == {}

        # a user's call wakes it: it is due again at once, and probed for real
        js = nats.connect(stack.runtime.settings.nats_url)
        nc = await js
        call = McpCallCompleted(user_id=uuid.uuid4(), server_slug="weather", method="tools/call", tool="echo",
                                key_source="system", metered=True, status="ok", latency_ms=3.0)
        await nc.jetstream().publish(call.subject, call.model_dump_json().encode(),
                                     headers={"Nats-Msg-Id": str(call.event_id)})
        await nc.close()

        async def woken() -> bool:
            t = await target(crawler, "weather")
            return t is not None and t.last_call_at is not None
        assert await wait_for(woken, 10)
        assert (await probe_due(crawler, client))["weather"] == "up"
        assert await results(crawler, "weather") == before + 1


@pytest.mark.parametrize("stack", OFF, indirect=True)
async def test_a_server_that_cannot_start_shows_down_then_up_within_two_intervals(
        stack: Stack, crawler: Runtime, health: Health) -> None:  # noqa: F811
    from wemcp.crawler.probes import probe_loop

    reader = metric_reader()
    before = {p.attributes["status"]: p.value for p in metric_points(reader).get("wemcp.probe.results", [])}
    port = free_port()
    interval = crawler.settings.probe_interval_seconds  # type: ignore[attr-defined]
    loop = asyncio.create_task(probe_loop(crawler))
    try:
        t0 = asyncio.get_running_loop().time()
        await stack.deploy("flaky", f"http://127.0.0.1:{port}/mcp")  # nothing listens there yet
        down = await wait_for(lambda: [e for e in health.of("flaky") if e["status"] == "down"] or None,
                              2 * interval + 3)
        assert down[0]["error"] and down[0]["uptime_24h"] == 0.0
        assert asyncio.get_running_loop().time() - t0 <= 2 * interval + 3
        async with serve_upstream("both", port=port):  # fixed: the server answers now
            t1 = asyncio.get_running_loop().time()
            assert await wait_for(lambda: [e for e in health.of("flaky") if e["status"] == "up"] or None,
                                  2 * interval + 3)
            assert asyncio.get_running_loop().time() - t1 <= 2 * interval + 3
        # and as metrics (wemcp.probe.results by status, wemcp.probe.duration)
        points = metric_points(reader)
        after = {p.attributes["status"]: p.value for p in points["wemcp.probe.results"]}
        assert after["down"] > before.get("down", 0) and after["up"] > before.get("up", 0)
        assert any(p.attributes["status"] == "up" and p.count >= 1 for p in points["wemcp.probe.duration"])
    finally:
        loop.cancel()
        with __import__("contextlib").suppress(BaseException):
            await loop


@pytest.mark.parametrize("stack", OFF, indirect=True)
async def test_disabled_and_stdio_local_servers_are_not_probed(stack: Stack, both_upstream: str,  # noqa: F811
                                                               crawler: Runtime) -> None:
    await stack.deploy("soon-off", both_upstream)
    assert await wait_for(lambda: target(crawler, "soon-off"), 10)
    await stack.disable("soon-off")

    async def off() -> bool:
        t = await target(crawler, "soon-off")
        return t is not None and not t.enabled
    assert await wait_for(off, 10)
    async with probe_client(crawler.settings) as client:  # type: ignore[arg-type]
        assert "soon-off" not in await probe_due(crawler, client)
    assert await results(crawler, "soon-off") == 0
    # a stdio-local server (backend "unhosted") has nothing to reach: no target; events of one
    # consumer are applied in order, so once the next deployment is folded the first one was too
    await stack.publish(ServerDeployed(server_id=uuid.uuid4(), slug="runs-locally", backend="unhosted"))
    await stack.publish(ServerDeployed(server_id=uuid.uuid4(), slug="after-it", backend="remote",
                                       endpoints=[Endpoint(url=both_upstream)]))
    t = await wait_for(lambda: target(crawler, "after-it"), 10)
    assert t.kind == "remote"
    assert await target(crawler, "runs-locally") is None


# ---- _reply: the JSON-RPC reply to a request id in a JSON or SSE answer (wemcp.common.sse underneath)

REPLY = {"jsonrpc": "2.0", "id": 2, "result": {"tools": []}}


def answer(body: bytes, ctype: str = "text/event-stream") -> httpx.Response:
    return httpx.Response(200, headers={"content-type": ctype}, content=body)


def test_reply_from_a_json_body() -> None:
    assert _reply(answer(json.dumps(REPLY).encode(), "application/json"), 2) == REPLY
    with pytest.raises(ValueError, match="not a JSON-RPC object"):
        _reply(answer(b"[1, 2]", "application/json"), 2)


def test_reply_is_the_event_with_the_request_id() -> None:
    note = {"jsonrpc": "2.0", "method": "notifications/message", "params": {}}
    other = {"jsonrpc": "2.0", "id": 1, "result": {}}
    body = (b": ping\r\n\r\ndata: " + json.dumps(note).encode() + b"\r\n\r\nid: 4\ndata:"
            + json.dumps(other).encode() + b"\n\ndata: not json\n\ndata: " + json.dumps(REPLY).encode() + b"\n\n")
    assert _reply(answer(body), 2) == REPLY
    assert _reply(answer(body), 1) == other


def test_reply_split_over_data_lines_and_without_the_last_blank_line() -> None:
    assert _reply(answer(b'data: {"jsonrpc": "2.0", "id": 2,\ndata: "result": {"tools": []}}\n\n'), 2) == REPLY
    assert _reply(answer(b"data: " + json.dumps(REPLY).encode()), 2) == REPLY


def test_no_reply_in_the_stream_is_an_error() -> None:
    with pytest.raises(ValueError, match="no reply"):
        _reply(answer(b"data: " + json.dumps({"jsonrpc": "2.0", "id": 9, "result": {}}).encode() + b"\n\n"), 2)
    with pytest.raises(ValueError, match="no reply"):
        _reply(answer(b""), 2)
