"""The whole platform's CPU per MCP call, and its latency and throughput beside supergateway.

Method
- The platform as ``make run`` starts it (``wemcp.devstack.stack.Stack``, durable embedded Postgres,
  NATS JetStream, Redis; every service its own process; default settings, JSON logs at info).
- The hosted server: one stdio MCP server, ``echo(text) -> text`` written with the official ``mcp``
  SDK (the same code as bench/gateway_compare.py's ``echo``), submitted as a source archive through
  the gateway and deployed by the real deployer (sandbox, its own venv, behind the deployer's
  stdio -> HTTP bridge), as users' servers are.
- The caller: a user with a platform API key (created with auth's own use case), so each call is
  verified, takes the quota decision in Redis (the daily limit raised so the bench is never
  refused) and produces a call event that catalog (counters) and ratelimit (usage) apply.
- The load client: bench/gateway_compare.py's (its own process, uvloop, one keep-alive connection
  per worker, stateless 2026-07-28 ``tools/call``, every reply checked).
- CPU: utime + stime from /proc/<pid>/stat of every platform process — gateway, auth, catalog,
  goods, deployer (its bridge; not the hosted child), ratelimit, crawler, agents, Postgres (the
  postmaster, its live children and the backends it reaped), NATS, Redis — over each cell (warm-up
  included) and until the consumers have applied every event of the cell (JetStream: nothing
  pending or unacked for catalog, ratelimit and crawler), divided by the calls the client made. The hosted
  child and the load client are excluded.
- supergateway (npm, bench/package.json): ``--stateful`` streamable HTTP over the same echo server
  (one 2025-11-25 session, as in gateway_compare.py); its own CPU (not its child's) is shown too.
- Cells are interleaved per round (platform c=1, supergateway c=1, platform c=16, supergateway
  c=16) so drifts of machine load hit both alike; medians of rounds are printed with the spread.

    .venv/bin/python bench/platform_cpu.py [--rounds 3] [--seconds 10] [--warmup 2] [--no-supergateway]

Targets (issue 14): all platform processes together <= 1.5 ms CPU per call; p50 <= 2.5 ms at 1
client; >= 600 calls/s at 16 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchkit import cpu_ms, record
from gateway_compare import ECHO_CMD, client_cmd, ensure_supergateway, wait_ready

from wemcp.devstack.sources import stdio_server

BENCH = Path(__file__).resolve().parent
ECHO_SERVER = stdio_server("bench-echo")
MANIFEST = {"name": "io.github.bench/echo", "version": "1.0.0", "runtime": "python", "entrypoint": "server.py",
            "description": "Echoes the text back (platform CPU bench)."}
PROCESSES = ("gateway", "auth", "catalog", "goods", "deployer", "ratelimit", "crawler", "agents")
CONSUMERS = ("catalog-mcp-call-completed", "ratelimit-mcp-call-completed", "crawler-logs-calls")


def mcp_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("mcp")


async def user_key(database_url: str) -> str:
    from wemcp.auth import service as auth
    from wemcp.common.db import make_engine, make_session_factory

    engine = make_engine(database_url, pool_size=1)
    try:
        async with make_session_factory(engine)() as s, s.begin():
            user = await auth.create_user(s, login=f"bench-{uuid.uuid4().hex[:6]}", role="user")
            _, raw = await auth.create_api_key(s, user.id, "bench", None, None)
        return raw
    finally:
        await engine.dispose()


async def host_echo(gateway: str, key: str, timeout: float = 600) -> str:  # noqa: ASYNC109
    import httpx2 as httpx

    from wemcp.devstack.testing import tar_gz

    headers = {"Authorization": f"Bearer {key}"}
    data = tar_gz({"server.py": ECHO_SERVER, "requirements.txt": f"mcp=={mcp_version()}\n"})
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as c:
        own = (await c.get("/api/v1/names/mine", headers=headers)).json()["platform_namespace"]  # names.py
        manifest = {**MANIFEST, "name": f"{own}/echo"}
        r = await c.post("/api/v1/servers/archive", headers=headers, data={"manifest": json.dumps(manifest)},
                         files={"archive": ("echo.tar.gz", data, "application/gzip")})
        if r.status_code != 202:
            raise RuntimeError(f"submission refused: {r.status_code} {r.text}")
        slug = r.json()["slug"]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            d = (await c.get(f"/api/v1/servers/{slug}", headers=headers)).json()
            if d["status"] == "failed":
                raise RuntimeError(f"deployment failed: {d.get('status_detail')}")
            if d["status"] == "published":
                return slug
            await asyncio.sleep(0.5)
    raise TimeoutError("the echo server was not published in time")


async def consumers_drained(nats_url: str, timeout: float = 120) -> float:  # noqa: ASYNC109
    """Seconds until catalog, ratelimit and the crawler (request logs) have applied (and acked) everything
    on CALLS."""
    import nats

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        t0 = time.perf_counter()
        while True:
            infos = [await js.consumer_info("CALLS", d) for d in CONSUMERS]
            if all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos):
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError("consumers did not catch up")
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


def platform_pids(stack: Any) -> dict[str, tuple[int, bool]]:
    """name -> (pid, whole tree?)"""
    pids = {name: (stack.services[name].proc.pid, False) for name in PROCESSES if name in stack.services}
    pids["postgres"] = (stack.postgres.proc.pid, True)
    pids["nats"] = (stack.nats.proc.pid, False)
    pids["redis"] = (stack.redis.proc.pid, False)
    return pids


def snapshot(pids: dict[str, tuple[int, bool]]) -> dict[str, float]:
    return {name: cpu_ms(pid, tree) for name, (pid, tree) in pids.items()}


async def run_client(url: str, mode: str, headers: dict[str, str], c: int, a: argparse.Namespace) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(*client_cmd(url, mode, headers, c, a.seconds, a.warmup),
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), a.seconds + a.warmup + 120)
    res = json.loads(out)
    if res.get("errors"):
        raise RuntimeError(f"{url} c={c}: {res['errors']}")
    return res


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


async def main(a: argparse.Namespace) -> int:
    from wemcp.devstack.infra import free_port, wait_port
    from wemcp.devstack.stack import SERVICES, Stack

    data = Path(tempfile.mkdtemp(prefix="wemcp-platform-cpu-"))
    gport = free_port()
    # the daily limit raised so the bench is never refused; the quota's Redis time-out raised from
    # 0.25 s so a loaded, shared machine does not turn into "quota unavailable" refusals (a quiet
    # machine never comes near either)
    env = {"WEMCP_DEPLOYER_BRIDGE_PORT": str(free_port()), "WEMCP_RATELIMIT_SERVER_DAILY_DEFAULT": str(10**9),
           "WEMCP_RATELIMIT_REDIS_TIMEOUT_SECONDS": "2"}
    env.update(kv.split("=", 1) for kv in a.env if "=" in kv)
    stack = Stack(data_dir=data, gateway_port=gport, durable=True, extra_env=env)
    sg: subprocess.Popen[bytes] | None = None
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    idle: dict[str, float] = {}
    try:
        print("starting the platform ...", file=sys.stderr)
        await asyncio.to_thread(stack.start_infra)
        await asyncio.to_thread(stack.migrate)
        await asyncio.to_thread(stack.start_services, (*SERVICES, "gateway"), 180)
        gateway = f"http://127.0.0.1:{gport}"
        key = await user_key(stack.database_url)
        print("hosting the echo server (deployer installs it) ...", file=sys.stderr)
        slug = await host_echo(gateway, key)
        targets = {"platform": (f"{gateway}/mcp/{slug}", "2026", {"authorization": f"Bearer {key}"})}
        if a.supergateway:
            sg_bin = ensure_supergateway()
            sport = free_port()
            log = open(data / "supergateway.log", "ab")  # noqa: ASYNC230 (once, at start)
            sg_args = [str(sg_bin), "--stdio", " ".join(ECHO_CMD), "--outputTransport", "streamableHttp",
                       "--stateful", "--port", str(sport), "--logLevel", "none"]
            sg = subprocess.Popen(sg_args,  # noqa: ASYNC220 (once, at start)
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(BENCH),
                                  start_new_session=True)
            log.close()
            await asyncio.to_thread(wait_port, sport, 60.0, sg, "supergateway")
            targets["supergateway"] = (f"http://127.0.0.1:{sport}/mcp", "2025", {})
        for url, mode, headers in targets.values():
            await wait_ready(url, mode, headers)
        await consumers_drained(stack.nats_url)
        pids = platform_pids(stack)
        # what the platform burns doing nothing (timers, polls), per second
        s0, t0 = snapshot(pids), time.perf_counter()
        await asyncio.sleep(a.idle)
        s1, dt = snapshot(pids), time.perf_counter() - t0
        idle = {k: (s1[k] - s0[k]) / dt for k in s0}
        before = uptime()
        for rnd in range(a.rounds):
            for c in a.levels:
                for row, (url, mode, headers) in targets.items():
                    c0, t_cell = snapshot(pids), time.perf_counter()
                    sg0 = cpu_ms(sg.pid) if sg is not None else 0.0
                    spies = [subprocess.Popen([a.py_spy, "record", "--format", "raw", "--rate", "250", "-p",  # noqa: ASYNC220
                                               str(pids[n][0]), "-d", str(int(a.seconds + a.warmup)),
                                               "-o", f"{a.profile_dir}/{n}-c{c}.txt"],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                             for n in ("gateway", "catalog", "ratelimit", "deployer")
                             ] if a.py_spy and rnd == 0 and row == "platform" else []
                    res = await run_client(url, mode, headers, c, a)
                    for spy in spies:
                        await asyncio.to_thread(spy.wait, 30)
                    if row == "platform":
                        await asyncio.sleep(0.2)  # the gateway's last batch of call events leaves
                        res["drain_s"] = await consumers_drained(stack.nats_url)
                        c1 = snapshot(pids)
                        res["cpu"] = {k: (c1[k] - c0[k]) / res["all"] for k in c0}
                        res["wall_s"] = time.perf_counter() - t_cell
                    else:
                        assert sg is not None
                        res["cpu"] = {"supergateway": (cpu_ms(sg.pid) - sg0) / res["all"]}
                    await record(results, rnd, row, c, res, width=12,
                                 extra=f"  CPU {sum(res['cpu'].values()):.3f} ms/call")
        after = uptime()
    finally:
        if sg is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sg.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                sg.wait(10)
        await asyncio.to_thread(stack.stop)
        if a.keep:
            print(f"data and logs: {data}", file=sys.stderr)
        else:
            shutil.rmtree(data, ignore_errors=True)

    def med(row: str, c: int, f: Any) -> float:
        return statistics.median(f(x) for x in results[(row, c)])

    def spread(row: str, c: int, f: Any) -> str:
        vals = [f(x) for x in results[(row, c)]]
        return f"{min(vals):.2f}-{max(vals):.2f}"

    print(f"before: {before}\nafter:  {after}\ncpus: {os.cpu_count()}  python {sys.version.split()[0]}  "
          f"{a.seconds:g} s per cell after {a.warmup:g} s warm-up, {a.rounds} round(s), median of rounds "
          f"(min-max in brackets)")
    print("\n| path | clients | p50 ms | p99 ms | calls/s | CPU ms/call |")
    print("|---|---:|---:|---:|---:|---:|")
    def cpu(x: dict[str, Any]) -> float:
        return sum(x["cpu"].values())

    for c in a.levels:
        for row in targets:
            print(f"| {row} | {c} | {med(row, c, lambda x: x['p50']):.2f} ({spread(row, c, lambda x: x['p50'])}) | "
                  f"{med(row, c, lambda x: x['p99']):.2f} | {med(row, c, lambda x: x['rps']):.0f} "
                  f"({spread(row, c, lambda x: x['rps'])}) | {med(row, c, cpu):.3f} |")
    names = list(pids)
    print("\nPlatform CPU per call by process, ms (median of rounds; warm-up and the consumers' catch-up "
          "included);\nidle: each process's CPU doing nothing, ms per second (timers, polls; over --idle s,"
          " in 10 ms ticks);"
          "\nmarginal: (CPU in the cell - idle x the cell's seconds) / calls; at N/s: marginal + idle / N, what the"
          "\nsame work costs per call when the platform serves N calls/s (a loaded machine serves fewer, and the"
          "\nidle share per call grows):\n")

    def marginal(x: dict[str, Any], n: str) -> float:
        return x["cpu"][n] - idle.get(n, 0.0) * x["wall_s"] / x["all"]

    at = a.project
    print("| process | idle ms/s | " + " | ".join(f"c={c} | c={c} marginal" for c in a.levels)
          + f" | at {at}/s (c={a.levels[-1]}) |")
    print("|---|---:|" + "---:|---:|" * len(a.levels) + "---:|")
    last = a.levels[-1]
    for n in names:
        cells = " | ".join(f"{med('platform', c, lambda x, n=n: x['cpu'][n]):.3f} | "
                           f"{med('platform', c, lambda x, n=n: marginal(x, n)):.3f}" for c in a.levels)
        proj = med("platform", last, lambda x, n=n: marginal(x, n)) + idle.get(n, 0.0) / at
        print(f"| {n} | {idle.get(n, 0):.1f} | {cells} | {proj:.3f} |")
    tot_cells = " | ".join(f"**{med('platform', c, cpu):.3f}** | "
                           f"{med('platform', c, lambda x: sum(marginal(x, n) for n in names)):.3f}"
                           for c in a.levels)
    tot_proj = med("platform", last, lambda x: sum(marginal(x, n) for n in names)) + sum(idle.values()) / at
    print(f"| **total** | {sum(idle.values()):.1f} | {tot_cells} | **{tot_proj:.3f}** |")
    catch = ", ".join(f"c={c} {med('platform', c, lambda x: x['drain_s']):.2f} s" for c in a.levels)
    print(f"\nconsumers caught up after the load stopped (median): {catch}")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measurement before the load")
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--project", type=int, default=600, help="calls/s to state the per-call CPU at (the target rate)")
    ap.add_argument("--no-supergateway", dest="supergateway", action="store_false")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="an extra environment variable for every platform process (ablations)")
    ap.add_argument("--keep", action="store_true", help="keep the data directory and logs")
    ap.add_argument("--py-spy", default="", help="a py-spy binary: profile gateway, catalog, ratelimit and deployer "
                    "during the first round's platform cells")
    ap.add_argument("--profile-dir", default="/tmp", help="where the profiles go (<process>-c<clients>.txt)")
    args = ap.parse_args()
    args.levels = [int(x) for x in args.concurrency.split(",")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on SIGTERM too
    raise SystemExit(asyncio.run(main(args)))
