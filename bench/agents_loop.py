"""Tool-loop overhead of the agents service, excluding the model.

Setup (all on loopback, one process): the scripted OpenAI-compatible model server from the agents
tests (answers instantly), an MCP server (MCPServer over stateless Streamable HTTP, 2026-07-28) with
the two tools the scripted model asks for, and the agents service's own loop (`Run` + `McpHub` +
`ProviderClient`, no database, no gateway).

Measured, median of N runs each:
  floor      the same HTTP work done by hand: 3 model calls + 2 tools/call on an open MCP client
  loop       a two-round run through the agents loop (connect + tools/list + 3 model calls + 2 calls)
  connect    McpHub open/close alone (MCP connect + tools/list)
Overhead per round = (loop - floor - connect) / 2.

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
from pathlib import Path

import httpx2 as httpx
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services" / "agents" / "tests"))
from agents_testkit import ScriptedModel, serve  # noqa: E402

from wemcp.agents.config import Settings  # noqa: E402
from wemcp.agents.loop import Caller, Run, parse_request  # noqa: E402
from wemcp.agents.mcp_tools import McpHub  # noqa: E402
from wemcp.agents.providers import ProviderClient, ResolvedModel  # noqa: E402
from wemcp.devstack.infra import free_port  # noqa: E402


def time_server() -> object:
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

    return srv.streamable_http_app(streamable_http_path="/mcp", stateless_http=True, json_response=True,
                                   transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))


async def main(n: int) -> None:
    model = ScriptedModel()
    settings = Settings(database_url="postgresql://x@127.0.0.1/x")
    async with serve(model.app(), free_port()) as model_url, serve(time_server(), free_port(), "on") as mcp_url:
        provider = ProviderClient(settings)
        resolved = ResolvedModel("bench", model_url + "/v1", "scripted-1", None)
        raw = {"model": "scripted-1", "messages": [{"role": "user", "content": "TIME please"}],
               "tools": [{"type": "mcp", "server_url": mcp_url + "/mcp", "server_label": "time"}]}

        async def loop_once() -> float:
            req = parse_request(raw, settings, Caller({}))
            hub = McpHub(req.mcp_specs, settings)
            t0 = time.perf_counter()
            async with hub:
                out = await Run(req, resolved, hub, provider, settings, "scripted-1").complete()
            dt = time.perf_counter() - t0
            assert out["tool_rounds"] == 2 and out["choices"][0]["message"]["content"].startswith("When it is")
            return dt

        async def connect_once() -> float:
            req = parse_request(raw, settings, Caller({}))
            t0 = time.perf_counter()
            async with McpHub(req.mcp_specs, settings) as hub:
                assert len(hub.definitions()) == 2
            return time.perf_counter() - t0

        async with Client(mcp_url + "/mcp") as direct, httpx.AsyncClient() as http:
            await direct.list_tools()

            async def floor_once() -> float:
                t0 = time.perf_counter()
                body = {"model": "scripted-1", "messages": [{"role": "user", "content": "hi"}]}
                await http.post(model_url + "/v1/chat/completions", json=body)
                await direct.call_tool("get_current_time", {"timezone": "America/New_York"})
                await http.post(model_url + "/v1/chat/completions", json=body)
                await direct.call_tool("convert_time", {"source_timezone": "a", "time": "09:30",
                                                        "target_timezone": "b"})
                await http.post(model_url + "/v1/chat/completions", json=body)
                return time.perf_counter() - t0

            for f in (floor_once, loop_once, connect_once):  # warm up
                await f()
            results: dict[str, list[float]] = {"floor": [], "loop": [], "connect": []}
            for _ in range(n):  # interleaved, so drift hits all three alike
                results["floor"].append(await floor_once())
                results["loop"].append(await loop_once())
                results["connect"].append(await connect_once())
        await provider.aclose()

    med = {k: statistics.median(v) * 1000 for k, v in results.items()}
    p90 = {k: sorted(v)[int(len(v) * 0.9) - 1] * 1000 for k, v in results.items()}
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}, n={n}")
    for k in ("floor", "loop", "connect"):
        print(f"{k:8s} p50 {med[k]:7.2f} ms   p90 {p90[k]:7.2f} ms")
    per_round = (med["loop"] - med["floor"] - med["connect"]) / 2
    print(f"loop overhead per round (p50, excluding model and tool time): {per_round:.2f} ms")
    print(f"per request: MCP connect + tools/list {med['connect']:.2f} ms")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
