"""Batch consumers of completed calls: lag under a steady rate, and how fast a backlog drains.

Method
- The real services, as ``make run`` starts them (``wemcp.devstack.stack.Stack``): catalog and
  ratelimit, each its own process, on embedded Postgres 18 (durable: fsync on), NATS JetStream
  (file storage) and Redis. Nothing else runs: the consumers are measured alone. The catalog holds
  ``--servers`` published servers the calls are spread over (one user per 50 calls).
- **Steady**: this process publishes ``--rate`` calls/s for ``--seconds`` onto ``CALLS``, either as
  the gateway does (``envelopes``: one ``mcp.call.batch`` per ``--interval``, 5 ms like the
  gateway's linger) or as gateways before batching did (``singles``: one ``mcp.call.completed`` per
  call, sent in the same 5 ms ticks). Lag of a call = the ``processed_at`` of the message that
  carried it in the consumer's ``processed_events`` (the consumer's transaction start, a few ms
  before its commit) - the call's ``occurred_at``; both clocks are this machine's. CPU: utime +
  stime from /proc of each service process over the steady phase, per call.
- **Backlog**: both consumer processes are SIGSTOPped, ``--backlog`` calls are published (same
  form), then one consumer at a time is SIGCONTinued and timed until JetStream says every message
  is acked (acks follow commits): calls/s of that consumer alone.

    .venv/bin/python bench/consumer_throughput.py [--rate 1500] [--seconds 60] [--mode envelopes,singles]
                                                  [--backlog 30000] [--servers 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from benchkit import cpu_ms, pct

CONSUMERS = {"catalog": "catalog-mcp-call-completed", "ratelimit": "ratelimit-mcp-call-completed"}


def make_call(slugs: list[str], users: list[uuid.UUID], i: int) -> dict:
    from wemcp.common.events.calls import McpCallCompleted

    return {"event_id": uuid.uuid4(), "occurred_at": datetime.now(UTC),
            "schema_version": McpCallCompleted.model_fields["schema_version"].default,
            "user_id": users[i % len(users)], "server_slug": slugs[i % len(slugs)], "agent_id": None,
            "method": "tools/call", "tool": "echo", "key_source": "system", "metered": True,
            "in_agent_run": False, "status": "ok", "error_code": None, "latency_ms": 1.234,
            "request_bytes": 120, "response_bytes": 240}


class Publisher:
    """Publishes calls the way the gateway does (orjson, Nats-Msg-Id = event id, PubAcks awaited
    together per tick) and remembers when each call occurred, by the message that carried it."""

    def __init__(self, nc, mode: str, slugs: list[str], users: list[uuid.UUID]) -> None:
        self.nc, self.mode, self.slugs, self.users = nc, mode, slugs, users
        self.js = nc.jetstream()
        self.sent_calls = 0
        self.messages = 0
        self.occurred: dict[str, list[float]] = {}  # message event id -> occurred_at of its calls

    async def tick(self, n: int) -> None:
        import orjson

        if n <= 0:
            return
        calls = [make_call(self.slugs, self.users, self.sent_calls + i) for i in range(n)]
        self.sent_calls += n
        if self.mode == "envelopes":
            eid = uuid.uuid4()
            body = orjson.dumps({"event_id": eid, "occurred_at": datetime.now(UTC), "schema_version": 1,
                                 "gateway": "bench", "calls": calls}, option=orjson.OPT_UTC_Z)
            msgs = [("mcp.call.batch", str(eid), body, [c["occurred_at"].timestamp() for c in calls])]
        else:
            msgs = [("mcp.call.completed", str(c["event_id"]), orjson.dumps(c, option=orjson.OPT_UTC_Z),
                     [c["occurred_at"].timestamp()]) for c in calls]
        for _, eid_s, _, at in msgs:
            self.occurred[eid_s] = at
        await asyncio.gather(*(self.js.publish(subject, body, headers={"Nats-Msg-Id": eid_s})
                               for subject, eid_s, body, _ in msgs))
        self.messages += len(msgs)

    async def steady(self, rate: float, seconds: float, interval: float) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        owed = 0.0
        k = 0
        while True:
            k += 1
            target = t0 + k * interval
            if target - t0 > seconds:
                break
            await asyncio.sleep(max(0.0, target - loop.time()))
            owed += rate * interval
            n = int(owed)
            owed -= n
            await self.tick(n)

    async def burst(self, calls: int, per_message: int) -> None:
        left = calls
        while left > 0:
            n = min(per_message if self.mode == "envelopes" else 500, left)
            await self.tick(n)
            left -= n


async def drained(js, durable: str, expected_acked: int | None = None) -> bool:
    info = await js.consumer_info("CALLS", durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def wait_drained(js, durables: list[str], timeout: float = 600.0) -> float:  # noqa: ASYNC109
    t0 = time.perf_counter()
    while True:
        done = [await drained(js, d) for d in durables]
        if all(done):
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"not drained in {timeout} s: {durables}")
        await asyncio.sleep(0.02)


async def lags(db_url: str, occurred: dict[str, list[float]]) -> dict[str, list[float]]:
    import asyncpg

    conn = await asyncpg.connect("postgresql://" + db_url.split("://", 1)[1])
    try:
        out: dict[str, list[float]] = {}
        for schema, durable in CONSUMERS.items():
            rows = await conn.fetch(f"SELECT event_id::text AS id, extract(epoch FROM processed_at) AS at "
                                    f"FROM {schema}.processed_events WHERE consumer = $1", durable)
            vals: list[float] = []
            for r in rows:
                for t in occurred.get(r["id"], ()):
                    vals.append(float(r["at"]) - t)
            out[schema] = vals
        return out
    finally:
        await conn.close()


async def seed(db_url: str, n: int) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect("postgresql://" + db_url.split("://", 1)[1])
    try:
        slugs = [f"bench-echo-{i}" for i in range(n)]
        await conn.executemany(
            "INSERT INTO catalog.servers (id, slug, name, version, package_key, title, description, readme, icon,"
            " source_kind, spec, status, published_at) VALUES ($1, $2, $3, '1.0.0', $4, $5, '', '', '', 'server.json',"
            " '{}'::jsonb, 'published', now()) ON CONFLICT (slug) DO NOTHING",
            [(uuid.uuid4(), s, f"io.bench/{s}", f"npm:@bench/{s}", f"Bench {s}") for s in slugs])
        return slugs
    finally:
        await conn.close()


async def reset(db_url: str, js) -> None:
    """Between runs: an empty CALLS stream, and no processed_events (the counters keep adding up)."""
    import asyncpg

    await js.purge_stream("CALLS")
    conn = await asyncpg.connect("postgresql://" + db_url.split("://", 1)[1])
    try:
        for schema in CONSUMERS:
            await conn.execute(f"TRUNCATE {schema}.processed_events")
    finally:
        await conn.close()


def pids(stack) -> dict[str, int]:
    return {name: stack.services[name].proc.pid for name in CONSUMERS}


async def run_mode(stack, mode: str, a: argparse.Namespace, slugs: list[str]) -> dict:
    import nats

    users = [uuid.uuid4() for _ in range(max(1, int(a.rate) // 50))]
    nc = await nats.connect(stack.nats_url)
    js = nc.jetstream()
    try:
        await reset(stack.database_url, js)
        procs = pids(stack)
        pg = stack.postgres.proc.pid
        nats_pid = stack.nats.proc.pid
        # steady
        pub = Publisher(nc, mode, slugs, users)
        cpu0 = {n: cpu_ms(p) for n, p in procs.items()} | {"postgres": cpu_ms(pg, True), "nats": cpu_ms(nats_pid)}
        spies = [subprocess.Popen([a.py_spy, "record", "--gil", "--format", "raw", "--rate", "200", "-p", str(p),  # noqa: ASYNC220
                                   "-d", str(int(a.seconds)), "-o", f"{a.profile_dir}/{mode}-{n}.txt"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for n, p in procs.items()] if a.py_spy else []
        t0 = time.perf_counter()
        await pub.steady(a.rate, a.seconds, a.interval)
        pub_s = time.perf_counter() - t0
        for spy in spies:
            spy.wait(30)
        tail = await wait_drained(js, list(CONSUMERS.values()))
        cpu1 = {n: cpu_ms(p) for n, p in procs.items()} | {"postgres": cpu_ms(pg, True), "nats": cpu_ms(nats_pid)}
        lag = await lags(stack.database_url, pub.occurred)
        steady = {"calls": pub.sent_calls, "messages": pub.messages, "publish_s": pub_s, "tail_s": tail,
                  "rate": pub.sent_calls / pub_s, "lag": lag,
                  "cpu_ms_per_call": {k: (cpu1[k] - cpu0[k]) / pub.sent_calls for k in cpu0}}
        # backlog: one consumer at a time drains what piled up while both were stopped
        await reset(stack.database_url, js)
        for p in procs.values():
            os.kill(p, signal.SIGSTOP)
        try:
            bpub = Publisher(nc, mode, slugs, users)
            await bpub.burst(a.backlog, max(1, round(a.rate * a.interval)))
        finally:
            drains = {}
            for name, p in procs.items():
                c0, pg0, n0 = cpu_ms(p), cpu_ms(pg, True), cpu_ms(nats_pid)
                os.kill(p, signal.SIGCONT)
                secs = await wait_drained(js, [CONSUMERS[name]])
                drains[name] = {"seconds": secs, "calls_per_s": bpub.sent_calls / secs,
                                "cpu_ms_per_call": (cpu_ms(p) - c0) / bpub.sent_calls,
                                "pg_ms_per_call": (cpu_ms(pg, True) - pg0) / bpub.sent_calls,
                                "nats_ms_per_call": (cpu_ms(nats_pid) - n0) / bpub.sent_calls}
            for p in procs.values():
                os.kill(p, signal.SIGCONT)
        return {"mode": mode, "steady": steady, "backlog": {"calls": bpub.sent_calls, "messages": bpub.messages,
                                                            "drain": drains}}
    finally:
        await nc.close()


def report(results: list[dict], a: argparse.Namespace, before: str, after: str) -> None:
    print(f"\nbefore: {before}\nafter:  {after}\ncpus: {os.cpu_count()}  python {sys.version.split()[0]}  "
          f"postgres embedded (fsync on), NATS JetStream file storage; {a.servers} servers")
    print(f"\nSteady: {a.rate:g} calls/s published for {a.seconds:g} s (ticks of {a.interval * 1000:g} ms); "
          "lag = consumer's processed_at - call's occurred_at\n")
    print("| form | consumer | calls | messages | lag p50 ms | lag p99 ms | lag max ms | CPU ms/call |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        s = r["steady"]
        for name in CONSUMERS:
            lag = s["lag"][name]
            lp = (f"{pct(lag, 50) * 1000:.0f} | {pct(lag, 99) * 1000:.0f} | {max(lag) * 1000:.0f}"
                  if lag else "- | - | -")
            print(f"| {r['mode']} | {name} | {s['calls']} | {s['messages']} | {lp} | "
                  f"{s['cpu_ms_per_call'][name]:.3f} |")
        print(f"| {r['mode']} | (postgres, all backends) | | | | | | {s['cpu_ms_per_call']['postgres']:.3f} |")
        print(f"| {r['mode']} | (nats) | | | | | | {s['cpu_ms_per_call']['nats']:.3f} |")
    print(f"\nBacklog: {a.backlog} calls published while both consumers were stopped; each then drains alone\n")
    print("CPU-bound rate = 1000 / (CPU ms per call of the consumer + Postgres + NATS): what one core would\n"
          "apply if the machine were not shared (calls/s is the wall-clock rate on this machine as it is)\n")
    print("| form | messages | consumer | drain s | calls/s | CPU ms/call: consumer | postgres | nats "
          "| CPU-bound calls/s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        b = r["backlog"]
        for name, d in b["drain"].items():
            total = d["cpu_ms_per_call"] + d["pg_ms_per_call"] + d["nats_ms_per_call"]
            print(f"| {r['mode']} | {b['messages']} | {name} | {d['seconds']:.2f} | {d['calls_per_s']:.0f} | "
                  f"{d['cpu_ms_per_call']:.3f} | {d['pg_ms_per_call']:.3f} | {d['nats_ms_per_call']:.3f} | "
                  f"{1000 / total:.0f} |")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=1500)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--interval", type=float, default=0.005)
    ap.add_argument("--mode", default="envelopes,singles")
    ap.add_argument("--backlog", type=int, default=30000)
    ap.add_argument("--servers", type=int, default=20)
    ap.add_argument("--keep", action="store_true", help="keep the data directory (logs)")
    ap.add_argument("--py-spy", default="", help="a py-spy binary: profile each consumer during the steady phase")
    ap.add_argument("--profile-dir", default="/tmp", help="where the py-spy profiles go (<mode>-<consumer>.txt)")
    a = ap.parse_args()

    from wemcp.devstack.stack import Stack

    data = Path(tempfile.mkdtemp(prefix="wemcp-consumers-"))
    stack = Stack(data_dir=data, gateway_port=0, durable=True,
                  extra_env={"LOG_LEVEL": "info", "WEMCP_DEPLOYER_BRIDGE_PORT": "0"})
    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    try:
        stack.start_infra()
        stack.migrate(("catalog", "ratelimit"))
        slugs = asyncio.run(seed(stack.database_url, a.servers))
        stack.start_services(("catalog", "ratelimit"), wait=120)
        before = uptime()
        results = [asyncio.run(run_mode(stack, m, a, slugs)) for m in a.mode.split(",") if m]
        after = uptime()
    finally:
        stack.stop()
        if not a.keep:
            shutil.rmtree(data, ignore_errors=True)
        else:
            print(f"data: {data}")
    report(results, a, before, after)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
