"""Benchmark (issue 14): call events through a NATS outage. The gateway (its own process, production
settings but quota off) serves ``tools/call`` at full rate from ``--concurrency`` clients while NATS
is stopped for ``--outage`` seconds and started again (same port, same store); then every event in
the CALLS stream is counted against the calls the clients got answered.

    .venv/bin/python bench/spool_outage.py [--outage 300] [--before 10] [--after 10] [--concurrency 16]

Processes: an embedded NATS (JetStream) and Redis, the upstream MCP server (the gateway tests'
server: the official SDK's MCPServer with an ``echo`` tool, in its own process), the gateway
(``python -m wemcp.gateway.main``, spool in a temporary directory with the default bound), and this
process as the load client (one keep-alive connection per worker, 2026-07-28 stateless calls).

Printed: produced (calls answered 200 with the echoed text), published (calls found in the stream),
lost (produced and not in the stream), doubled (a call's event id more than once), spool peak
bytes (sampled every 0.5 s), catch-up seconds (from NATS back until the spool is empty and every
event is in the stream), the call rate, and the gateway's own counters from its shutdown log line.
The gateway is stopped with SIGTERM at the end (what it drains is counted too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODERN = {"mcp-protocol-version": "2026-07-28", "accept": "application/json, text/event-stream",
          "content-type": "application/json"}


def spool_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.glob("*.seg")) if d.exists() else 0


async def upstream(port: int) -> None:
    from wemcp.testkit.upstream import serve_upstream

    async with serve_upstream("both", port=port) as url:
        print(url, flush=True)
        await asyncio.Event().wait()


async def load(url: str, workers: int, stop: asyncio.Event, counts: dict[str, int]) -> None:
    import httpx2 as httpx

    async def worker(w: int) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            i = 0
            while not stop.is_set():
                i += 1
                text = f"{w}-{i}"
                body = json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
                    "name": "echo", "arguments": {"text": text}, "_meta": {
                        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                        "io.modelcontextprotocol/clientCapabilities": {}}}})
                try:
                    r = await client.post(url, headers=MODERN, content=body)
                    ok = r.status_code == 200 and r.json()["result"]["content"][0]["text"] == text
                except Exception:
                    ok = False
                counts["ok" if ok else "failed"] += 1

    await asyncio.gather(*(worker(w) for w in range(workers)))


async def stream_calls(nats_url: str) -> list[dict[str, Any]]:
    """Every call in the CALLS stream: as many messages as the stream holds (a fetch that times out on
    a loaded machine is tried again, up to two minutes)."""
    import nats
    import orjson

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        target = (await js.stream_info("CALLS")).state.messages
        sub = await js.pull_subscribe("mcp.call.>", stream="CALLS")
        out: list[dict[str, Any]] = []
        got, deadline = 0, time.monotonic() + 120
        while got < target and time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(500, timeout=5)
            except Exception:
                continue
            for m in msgs:
                got += 1
                body = orjson.loads(m.data)
                out += body["calls"] if "calls" in body else [body]
                await m.ack()
        if got < target:
            print(f"read {got} of {target} messages in the stream", flush=True)
        return out
    finally:
        await nc.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", default="main", choices=["main", "upstream"])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--outage", type=float, default=300.0, help="seconds NATS is down")
    ap.add_argument("--before", type=float, default=10.0)
    ap.add_argument("--after", type=float, default=10.0, help="seconds of load after NATS is back")
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    if args.role == "upstream":
        await upstream(args.port)
        return

    from wemcp.devstack.infra import EmbeddedNats, EmbeddedRedis, free_port
    from wemcp.devstack.stack import ServiceProcess
    from wemcp.testkit.catalog import publish_route

    work = Path(tempfile.mkdtemp(prefix="wemcp-spool-bench-"))
    server, redis = EmbeddedNats(work / "nats"), EmbeddedRedis(work / "redis", persistent=False)
    server.start()
    redis.start()
    up_port, gw_port = free_port(), free_port()
    up = await asyncio.create_subprocess_exec(sys.executable, __file__, "--role", "upstream", "--port", str(up_port),
                                              stdout=asyncio.subprocess.PIPE)
    gw = None
    try:
        assert up.stdout is not None
        up_url = (await up.stdout.readline()).decode().strip()
        await publish_route(server.url, "echo", up_url, name="io.bench/echo")
        spool = work / "spool"
        env = {**os.environ, "NATS_URL": server.url, "REDIS_URL": redis.url,
               "DATABASE_URL": "postgresql://unused@127.0.0.1:1/unused",
               "WEMCP_GATEWAY_PORT": str(gw_port), "WEMCP_GATEWAY_HOST": "127.0.0.1", "WEMCP_EGRESS_ALLOW": "127.0.0.1",
               "WEMCP_GATEWAY_SPOOL_DIR": str(spool), "WEMCP_GATEWAY_QUOTA_ENABLED": "false",
               "WEMCP_GATEWAY_MCP_ALLOW_ANONYMOUS": "true", "LOG_FORMAT": "json"}
        gw = ServiceProcess("gateway", gw_port, work / "gateway.log", env)
        gw.start()
        url = f"http://127.0.0.1:{gw_port}/mcp/echo"
        counts = {"ok": 0, "failed": 0}
        deadline = time.monotonic() + 90
        while counts["ok"] == 0:  # the gateway up and the route known
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not serve:\n" + gw.log_tail())
            once = asyncio.Event()
            asyncio.get_running_loop().call_later(0.05, once.set)
            await load(url, 1, once, counts)
            if counts["ok"] == 0:
                await asyncio.sleep(0.3)
        probe_events, counts["ok"], counts["failed"] = counts["ok"], 0, 0  # the probes' events count too
        stop = asyncio.Event()
        runner = asyncio.create_task(load(url, args.concurrency, stop, counts))
        peak = 0
        await asyncio.sleep(args.before)
        t_down = time.monotonic()
        ok_down = counts["ok"]
        server.stop()
        print(f"NATS stopped at {counts['ok']} calls", flush=True)
        while time.monotonic() - t_down < args.outage:
            await asyncio.sleep(0.5)
            peak = max(peak, spool_bytes(spool))
        during = counts["ok"] - ok_down
        peak = max(peak, spool_bytes(spool))
        server.start()
        t_up = time.monotonic()
        print(f"NATS started again: {during} calls during the outage "
              f"({during / args.outage:.0f}/s), spool {spool_bytes(spool)} bytes", flush=True)
        caught_up = None
        while time.monotonic() - t_up < args.after or caught_up is None:
            await asyncio.sleep(0.5)
            size = spool_bytes(spool)
            peak = max(peak, size)
            if caught_up is None and size == 0:
                caught_up = time.monotonic() - t_up
            if time.monotonic() - t_up > 900:
                break
        stop.set()
        await runner
        gw.signal(signal.SIGTERM)
        assert gw.proc is not None
        await asyncio.get_running_loop().run_in_executor(None, gw.proc.wait, 60)
        calls = [c for c in await stream_calls(server.url) if c["server_slug"] == "echo" and c["status"] == "ok"]
        ids = {c["event_id"] for c in calls}
        produced = counts["ok"] + probe_events
        stats = {}
        for line in (work / "gateway.log").read_text().splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if rec.get("event") == "call_events_stopped":
                    stats = rec
        print(f"outage {args.outage:g} s, {args.concurrency} clients, load {os.getloadavg()}")
        print("| produced | published | lost | doubled | spool peak bytes | catch-up s | calls/s in outage | "
              "failed calls |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {produced} | {len(ids)} | {produced - len(ids)} | {len(calls) - len(ids)} | {peak} | "
              f"{caught_up if caught_up is None else round(caught_up, 1)} | {during / args.outage:.0f} | "
              f"{counts['failed']} |")
        print("gateway counters at shutdown:", {k: stats.get(k) for k in
                                                ("published", "spooled", "replayed", "dropped", "batches")})
    finally:
        if gw is not None:
            gw.stop()
        with contextlib.suppress(ProcessLookupError):
            up.send_signal(signal.SIGTERM)
        await up.wait()
        server.stop()
        redis.stop()


if __name__ == "__main__":
    asyncio.run(main())
