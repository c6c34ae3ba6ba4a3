"""Per-request latency of the agents service's tool loop, cold and warm (pooled MCP connections),
excluding the model.

Setup (all on loopback, one process): the scripted OpenAI-compatible model server from the agents
tests (answers at once); an MCP server (MCPServer, stateless Streamable HTTP) serving
``get_current_time``, ``convert_time`` and ``add`` at ``/mcp/time``, standing where the gateway's
MCP router is (``gateway_url``), so the tools are ``{"type": "mcp", "ref": "time"}`` exactly as in
production; and the agents service's own loop (``Run`` + ``McpHub`` + ``McpPool`` +
``ProviderClient``; no database, no gateway in between). Every request is a saved agent's run as
the gateway forwards it: ``Authorization`` and a freshly signed run context.

Measured per request (parse + MCP clients + the loop + close), interleaved, p50 and p99:
  1 round    "ADD": 2 model calls + 1 tools/call
  2 rounds   "TIME": 3 model calls + 2 tools/call
  cold       a new user for every request: a new pool entry (new connection, tools/list)
  warm       the same user again: the pooled connection and tool list (within their TTLs)
  floor      the same model calls and tool calls by hand on an already-open MCP client
Loop overhead = warm - floor (per request; the per-round part is 2 rounds - 1 round).

And the design choice (one tools/call per request, the same server, stateful for the session):
  held session      a 2025 session opened once and kept (initialize once; the pool design not taken)
  stateless pooled  McpHub open (per-request client, 2026-07-28, pooled connection and tool list)
                    + the call + close (the design taken)
  per-request conn  a new HTTP client + the SDK's auto negotiation + tools/list + the call + close
                    (what every request paid before the pool)

    .venv/bin/python bench/agents_loop.py [N]
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid

import httpx2 as httpx
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

from wemcp.agents.config import Settings
from wemcp.agents.loop import Caller, Run, parse_request
from wemcp.agents.mcp_pool import McpPool
from wemcp.agents.mcp_tools import McpHub
from wemcp.agents.providers import ProviderClient, ResolvedModel
from wemcp.devstack.testing import serve_app
from wemcp.quota.runcontext import sign_run_context
from wemcp.testkit.model import ScriptedModel

SECRET = "bench-agent-run-secret-0123456789"
AGENT = str(uuid.uuid4())


def time_server(path: str = "/mcp/time", stateless: bool = True) -> object:
    srv = MCPServer("time")

    @srv.tool()
    def get_current_time(timezone: str) -> str:
        """Current time."""
        return json.dumps({"timezone": timezone, "datetime": "2026-11-24T09:30:00-05:00"})

    @srv.tool()
    def convert_time(source_timezone: str, time: str, target_timezone: str) -> str:
        """Convert."""
        return json.dumps({"source": {"datetime": "2026-11-24T09:30:00-05:00"},
                           "target": {"datetime": "2026-11-24T23:30:00+09:00"}})

    @srv.tool()
    def add(a: int, b: int) -> str:
        """Add two integers."""
        return str(a + b)

    return srv.streamable_http_app(streamable_http_path=path, stateless_http=stateless, json_response=True,
                                   transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))


def caller(user: str) -> Caller:
    token = sign_run_context(SECRET, user_id=user, agent_id=AGENT, run_id=uuid.uuid4().hex, servers=["time"])
    return Caller({"authorization": f"Bearer token-of-{user}"}, user, f"agent:{AGENT}",
                  {"X-WeMcp-Agent-Run": token})


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))] * 1000


async def main(n: int) -> None:
    load_before = os.getloadavg()
    model = ScriptedModel()
    async with serve_app(model.app()) as model_url, serve_app(time_server(), lifespan="on") as gw, \
            serve_app(time_server("/mcp/held", stateless=False), lifespan="on") as stateful:
        settings = Settings(database_url="postgresql://x@127.0.0.1/x", gateway_url=gw)
        provider = ProviderClient(settings)
        pool = McpPool(settings)
        pool.start()
        resolved = ResolvedModel("bench", model_url + "/v1", "scripted-1", None)
        questions = {1: "ADD two and forty", 2: "TIME in Tokyo?"}
        regular = str(uuid.uuid4())  # the user of the warm requests

        async def request(rounds: int, user: str) -> float:
            raw = {"model": "scripted-1", "messages": [{"role": "user", "content": questions[rounds]}],
                   "tools": [{"type": "mcp", "ref": "time"}]}
            t0 = time.perf_counter()
            req = parse_request(raw, settings, caller(user))
            async with McpHub(req.mcp_specs, settings, pool) as hub:
                out = await Run(req, resolved, hub, provider, settings, "scripted-1").complete()
            dt = time.perf_counter() - t0
            assert out["tool_rounds"] == rounds and [c["status"] for c in out["mcp_calls"]] == ["ok"] * rounds, out
            return dt

        def one_call_spec(user: str) -> list:
            raw = {"model": "m", "messages": [{"role": "user", "content": "x"}],
                   "tools": [{"type": "mcp", "ref": "time", "allowed_tools": ["add"]}]}
            return parse_request(raw, settings, caller(user)).mcp_specs

        async def stateless_pooled(user: str) -> float:
            t0 = time.perf_counter()
            async with McpHub(one_call_spec(user), settings, pool) as hub:
                assert (await hub.call(1, "time__add", '{"a": 2, "b": 40}')) == "42"
            return time.perf_counter() - t0

        async def per_request_connection() -> float:
            t0 = time.perf_counter()
            async with httpx.AsyncClient(headers=caller(regular).headers) as h, \
                    Client(streamable_http_client(gw + "/mcp/time", http_client=h)) as c:
                await c.list_tools()
                await c.call_tool("add", {"a": 2, "b": 40})
            return time.perf_counter() - t0

        async with Client(gw + "/mcp/time") as direct, httpx.AsyncClient() as http, \
                httpx.AsyncClient(headers=caller(str(uuid.uuid4())).headers) as held_http, \
                Client(streamable_http_client(stateful + "/mcp/held", http_client=held_http), mode="legacy") as held:
            await direct.list_tools()
            await held.list_tools()

            async def held_session() -> float:
                t0 = time.perf_counter()
                await held.call_tool("add", {"a": 2, "b": 40})
                return time.perf_counter() - t0
            body = {"model": "scripted-1", "messages": [{"role": "user", "content": "hi"}]}

            async def floor(rounds: int) -> float:
                t0 = time.perf_counter()
                await http.post(model_url + "/v1/chat/completions", json=body)
                if rounds == 1:
                    await direct.call_tool("add", {"a": 2, "b": 40})
                else:
                    await direct.call_tool("get_current_time", {"timezone": "America/New_York"})
                    await http.post(model_url + "/v1/chat/completions", json=body)
                    await direct.call_tool("convert_time", {"source_timezone": "America/New_York", "time": "09:30",
                                                            "target_timezone": "Asia/Tokyo"})
                await http.post(model_url + "/v1/chat/completions", json=body)
                return time.perf_counter() - t0

            for rounds in (1, 2):  # warm up every path
                await floor(rounds)
                await request(rounds, str(uuid.uuid4()))
                await request(rounds, regular)
            await stateless_pooled(regular)
            await held_session()
            await per_request_connection()
            results: dict[str, list[float]] = {}
            designs: dict[str, list[float]] = {}
            for _ in range(n):  # interleaved, so drift hits every series alike
                for rounds in (1, 2):
                    label = f"{rounds} round{'s' if rounds > 1 else ''}"
                    results.setdefault(f"{label} floor", []).append(await floor(rounds))
                    results.setdefault(f"{label} cold", []).append(await request(rounds, str(uuid.uuid4())))
                    results.setdefault(f"{label} warm", []).append(await request(rounds, regular))
                designs.setdefault("held session", []).append(await held_session())
                designs.setdefault("stateless pooled", []).append(await stateless_pooled(regular))
                designs.setdefault("per-request conn", []).append(await per_request_connection())
        entries = len(pool)
        await pool.aclose()
        await provider.aclose()
    load_after = os.getloadavg()

    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}, n={n}")
    print(f"load average (1/5/15 min): before {' '.join(f'{x:.2f}' for x in load_before)}, "
          f"after {' '.join(f'{x:.2f}' for x in load_after)}")
    print(f"{'per request':16s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for k, v in results.items():
        print(f"{k:16s} {statistics.median(v) * 1000:8.2f} {pct(v, 0.99):8.2f}")
    med = {k: statistics.median(v) * 1000 for k, v in results.items()}
    over1 = med["1 round warm"] - med["1 round floor"]
    over2 = med["2 rounds warm"] - med["2 rounds floor"]
    print(f"loop overhead per request, warm (p50, excluding model and tool time): 1 round {over1:.2f} ms, "
          f"2 rounds {over2:.2f} ms; per extra round {over2 - over1:.2f} ms")
    print(f"cold - warm (p50): 1 round {med['1 round cold'] - med['1 round warm']:.2f} ms, "
          f"2 rounds {med['2 rounds cold'] - med['2 rounds warm']:.2f} ms; pool entries at the end: {entries}")
    print(f"{'one tools/call':16s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for k, v in designs.items():
        print(f"{k:16s} {statistics.median(v) * 1000:8.2f} {pct(v, 0.99):8.2f}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
