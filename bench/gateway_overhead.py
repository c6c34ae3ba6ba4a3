"""Benchmark: the gateway's overhead on one MCP tools/call, against calling the upstream directly.

    .venv/bin/python bench/gateway_overhead.py [--seconds 3] [--concurrency 1,16,64]

Starts embedded NATS and Redis (no Docker), an upstream (the official SDK's MCPServer, both eras,
JSON responses, on loopback) and the gateway (its real runtime, anonymous callers, no quota client,
log level warning) in this one process and event loop, so both paths share the same CPU. Each
(path, concurrency) cell: ``concurrency`` coroutines send a 2026-07-28 ``tools/call echo`` (one
stateless POST, httpx2 keep-alive pool) back to back for ``--seconds`` after a 0.5 s warm-up;
latency around each call with perf_counter; throughput = calls / wall time. Writes a table to
stdout (bench/results/gateway.md holds a recorded run).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx2 as httpx
import nats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "services/gateway/tests"))

from gateway_testkit import Stack, serve_app  # noqa: E402
from gateway_upstream import serve_upstream  # noqa: E402

from wemcp.common.service import Runtime, build_app  # noqa: E402
from wemcp.devstack.infra import EmbeddedNats, EmbeddedRedis  # noqa: E402
from wemcp.gateway.config import Settings  # noqa: E402
from wemcp.gateway.main import SPEC  # noqa: E402

HEADERS = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "echo",
           "accept": "application/json, text/event-stream", "content-type": "application/json"}
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def cell(url: str, concurrency: int, seconds: float) -> dict[str, float]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "hi"}, "_meta": META}}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as h:
        lat: list[float] = []
        calls = 0
        stop_at = 0.0
        measuring = False

        async def worker() -> None:
            nonlocal calls
            while True:
                t = time.perf_counter()
                if t >= stop_at:
                    return
                r = await h.post(url, json=body, headers=HEADERS)
                assert r.status_code == 200 and '"hi"' in r.text, r.text
                if measuring:
                    lat.append(time.perf_counter() - t)
                    calls += 1

        stop_at = time.perf_counter() + 0.5
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        measuring = True
        t0 = time.perf_counter()
        stop_at = t0 + seconds
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"p50": pct(lat, 50) * 1000, "p99": pct(lat, 99) * 1000, "rps": calls / wall, "n": calls}


async def main(seconds: float, levels: list[int]) -> None:
    for name in ("httpx", "httpx2", "httpcore", "httpcore2", "mcp"):
        logging.getLogger(name).setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="gwbench-"))
    nats_srv = EmbeddedNats(tmp / "nats")
    redis_srv = EmbeddedRedis(tmp / "redis", persistent=False)
    nats_srv.start()
    redis_srv.start()
    try:
        async with serve_upstream("both") as upstream:
            settings = Settings(database_url="postgresql://bench@127.0.0.1:1/none", nats_url=nats_srv.url,
                                redis_url=redis_srv.url, port=0, log_level="warning", quota_enabled=False,
                                auth_url="http://127.0.0.1:1", route_replay_wait_seconds=1.0)
            runtime = Runtime(SPEC, settings)
            await runtime.open()
            runtime.extras["gateway"].verifier = None
            runtime.extras["mcp"].quota = None
            nc = await nats.connect(nats_srv.url)
            try:
                async with serve_app(build_app(SPEC, runtime)) as gw:
                    stack = Stack(gw, runtime, nc, None)
                    await stack.deploy("bench", upstream, versions=["2026-07-28", "2025-11-25"])
                    rows = []
                    for c in levels:
                        for name, url in (("direct", upstream), ("gateway", gw + "/mcp/bench")):
                            rows.append((name, c, await cell(url, c, seconds)))
            finally:
                await runtime.close()
                await nc.close()
    finally:
        redis_srv.stop()
        nats_srv.stop()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"uptime: {load}  cpus: {os.cpu_count()}  run {uuid.uuid4().hex[:6]}")
    print("| path | concurrency | p50 ms | p99 ms | calls/s | calls |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, c, r in rows:
        print(f"| {name} | {c} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rps']:.0f} | {r['n']:.0f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--concurrency", default="1,16,64")
    a = ap.parse_args()
    asyncio.run(main(a.seconds, [int(x) for x in a.concurrency.split(",")]))
