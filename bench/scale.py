"""Benchmark (issue 21): 1, 2 and 4 gateway processes in front of one hosted server, on this machine.

    .venv/bin/python bench/scale.py [--gateways 1,2,4] [--concurrency 16] [--seconds 5] [--warmup 1]
                                    [--rounds 1] [--rows 2026,2025]

**Set-up** (bench/gateway_compare.py's pieces): one stdio ``echo`` server behind the deployer's bridge
(its own process), embedded NATS and Redis, and N gateway processes (``python -m wemcp.gateway.main``,
production settings: info logs with the access log, quota decided in Redis, call events to JetStream),
each announcing its peer URL (``WEMCP_GATEWAY_PEER_URL``) so requests of a session another replica owns
are forwarded to it (replicas.py). Anonymous callers (the development default), the daily quota raised
so the bench is never refused.

**The client** is its own process: ``concurrency`` workers, each with one keep-alive connection to
gateway ``i % N`` (what an L4 balancer does with connections), sending ``tools/call echo`` back to back;
every reply is checked. Rows:

- ``2026``: stateless 2026-07-28 calls: any replica serves any call, nothing is forwarded.
- ``2025``: one 2025-11-25 session (initialized on gateway 0) shared by all workers: the calls that
  reach the other N-1 gateways are forwarded to its owner, so this row shows what forwarding costs.

**Reported** per (N, row): calls/s, p50 and p99 latency (ms), CPU per call (ms) of the gateways
together and of everything (gateways + bridge and its child + NATS + Redis), over the measured
seconds. Two cores shared with the client, the bridge and the stores show what replication *costs*
(more processes competing for the same cores), not what it gains on a cluster; docs/scaling.md
extrapolates.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import gateway_compare as gc

SELF = str(Path(__file__).resolve())
PY = sys.executable


# -- the client: workers spread over the gateways by connection ----------------------------------------------
async def run_client(urls: list[str], mode: str, concurrency: int, seconds: float, warmup: float) -> dict[str, Any]:
    """gateway_compare.py's client over the gateways; between the warm-up and the measured seconds the
    parent samples CPU (a stdin handshake)."""
    loop = asyncio.get_running_loop()

    async def handshake() -> None:
        print("warm", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)

    return await gc.run_client(urls, mode, {}, concurrency, seconds, warmup, between=handshake)


# -- orchestration --------------------------------------------------------------------------------------------
async def main(a: argparse.Namespace) -> None:
    from wemcp.devstack.infra import EmbeddedNats, EmbeddedRedis

    counts = [int(x) for x in a.gateways.split(",")]
    rows = [r for r in a.rows.split(",") if r]
    tmp = Path(tempfile.mkdtemp(prefix="scale-"))
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(args: list[str], name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(tmp / f"{name}.log", "ab")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                             cwd=str(gc.BENCH), start_new_session=True)
        log.close()
        procs.append(p)
        return p

    nats_srv, redis_srv = EmbeddedNats(tmp / "nats"), EmbeddedRedis(tmp / "redis", persistent=False)
    nats_srv.start()
    redis_srv.start()
    results: dict[tuple[int, str], list[dict[str, Any]]] = {}
    print(f"# {gc.uptime()}", flush=True)
    try:
        port_file = tmp / "bridge.port"
        bridge = spawn([PY, gc.SELF, "--role", "bridge", "--port-file", str(port_file)], "bridge")
        for _ in range(600):
            if port_file.exists() and port_file.read_text():
                break
            await asyncio.sleep(0.05)
        bport = port_file.read_text().split()[0]
        bridge_url = f"http://127.0.0.1:{bport}/s/echo/mcp"
        await gc.publish_route(nats_srv.url, "echo", bridge_url)
        for n in counts:
            gateways: list[subprocess.Popen[bytes]] = []
            urls = []
            for i in range(n):
                port = gc.free_port()
                env = {**os.environ, "NATS_URL": nats_srv.url, "REDIS_URL": redis_srv.url,
                       "DATABASE_URL": "postgresql://bench@127.0.0.1:1/unused", "LOG_LEVEL": "info",
                       "LOG_FORMAT": "json", "WEMCP_GATEWAY_HOST": "127.0.0.1", "WEMCP_GATEWAY_PORT": str(port),
                       "WEMCP_GATEWAY_PEER_URL": f"http://127.0.0.1:{port}",
                       "WEMCP_GATEWAY_AUTH_URL": "http://127.0.0.1:1", "WEMCP_GATEWAY_QUOTA_ENABLED": "true",
                       "WEMCP_GATEWAY_SYSTEM_KEYS_FROM_VAULT": "false",
                       "WEMCP_GATEWAY_SPOOL_DIR": str(tmp / f"spool-{n}-{i}"),
                       "WEMCP_RATELIMIT_SERVER_DAILY_DEFAULT": str(10**9)}
                env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
                gw = spawn([PY, "-m", "wemcp.gateway.main"], f"gateway-{n}-{i}", env)
                gc.wait_port(port, gw, f"gateway {i}")
                gateways.append(gw)
                urls.append(f"http://127.0.0.1:{port}/mcp/echo")
            for u in urls:
                await gc.wait_ready(u, "2026", {})
            pids = [g.pid for g in gateways]
            for _ in range(a.rounds):
                for row in rows:
                    client = await asyncio.create_subprocess_exec(
                        PY, SELF, "--role", "client", "--urls", ",".join(urls), "--mode", row,
                        "--concurrency", str(a.concurrency), "--seconds", str(a.seconds), "--warmup", str(a.warmup),
                        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
                    assert client.stdout is not None and client.stdin is not None
                    line = await client.stdout.readline()
                    if line.strip() != b"warm":
                        out, _ = await client.communicate()
                        raise RuntimeError(f"client: {(line + out).decode()[-1000:]}")
                    g0 = gc.cpu_seconds(pids)
                    a0 = g0 + gc.cpu_seconds([bridge.pid]) + gc.cpu_seconds([bridge.pid], True) + gc.cpu_seconds(
                        [nats_srv.proc.pid, redis_srv.proc.pid])
                    client.stdin.write(b"go\n")
                    await client.stdin.drain()
                    out, _ = await client.communicate()
                    g1 = gc.cpu_seconds(pids)
                    a1 = g1 + gc.cpu_seconds([bridge.pid]) + gc.cpu_seconds([bridge.pid], True) + gc.cpu_seconds(
                        [nats_srv.proc.pid, redis_srv.proc.pid])
                    r = json.loads(out.decode().strip().splitlines()[-1])
                    if r.get("errors"):
                        raise RuntimeError(f"{n} gateways, {row}: {r['errors']}")
                    r["gw_cpu_ms"] = (g1 - g0) * 1000 / r["n"]
                    r["all_cpu_ms"] = (a1 - a0) * 1000 / r["n"]
                    results.setdefault((n, row), []).append(r)
                    print(f"  {n} gateway(s) {row}: {r['rps']:.0f} calls/s p50 {r['p50']:.2f} ms "
                          f"p99 {r['p99']:.2f} ms gw {r['gw_cpu_ms']:.2f} ms/call all {r['all_cpu_ms']:.2f} ms/call",
                          flush=True)
            for g in gateways:
                g.send_signal(signal.SIGTERM)
            for g in gateways:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    g.wait(10)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
            if p.poll() is None:
                p.kill()
        nats_srv.stop()
        redis_srv.stop()
    print(f"# {gc.uptime()}")
    print(f"\nc={a.concurrency}, {a.seconds:g} s per cell, median of {a.rounds} round(s)\n")
    print("| gateways | row | calls/s | p50 ms | p99 ms | gateway CPU ms/call | all CPU ms/call |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (n, row), rs in results.items():
        def med(k: str, rs: list[dict[str, Any]] = rs) -> float:
            return statistics.median(r[k] for r in rs)
        print(f"| {n} | {row} | {med('rps'):.0f} | {med('p50'):.2f} | {med('p99'):.2f} | {med('gw_cpu_ms'):.2f} | "
              f"{med('all_cpu_ms'):.2f} |")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--role", default="main", choices=["main", "client"])
    p.add_argument("--urls", default="")
    p.add_argument("--mode", default="2026")
    p.add_argument("--gateways", default="1,2,4")
    p.add_argument("--rows", default="2026,2025")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args()
    if args.role == "client":
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        print(json.dumps(asyncio.run(run_client(args.urls.split(","), args.mode, args.concurrency, args.seconds,
                                                args.warmup))))
    else:
        asyncio.run(main(args))
