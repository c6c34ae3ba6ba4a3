"""Benchmark: quota decisions per second and p50/p99 latency, in-process client vs NATS request/reply,
side by side with a plain Redis INCR baseline (the floor: one round trip, no script, no logic).

    .venv/bin/python bench/ratelimit_decide.py [--seconds 3] [--concurrency 1,16,64]

Starts its own embedded Redis and NATS (no Docker), and a separate responder process for the NATS
path (wemcp.testkit.quota_remote; the ratelimit service no longer answers decisions on NATS). Every
mode runs in the same process, the same run, against the same Redis. Each (mode, concurrency) cell:
``concurrency`` coroutines call back to back for ``--seconds`` after a 0.5 s warm-up; latency is
measured around each call with perf_counter; throughput = calls / wall time. Users are drawn from a
pool of 1000 and the limit is set out of reach, so every decision runs the full check-and-consume
script and is allowed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from benchkit import pct
from redis.asyncio import Redis

from wemcp.devstack.infra import EmbeddedNats, EmbeddedRedis
from wemcp.quota.client import QuotaClient
from wemcp.quota.policy import StaticPolicies
from wemcp.testkit.quota_remote import DecisionResponder, NatsQuotaClient

SUBJECT = "ratelimit.bench.decide"
BIG = 10**9


async def responder_main(nats_url: str, redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    nc = await nats.connect(nats_url)
    quota = QuotaClient(redis, StaticPolicies(server_daily=BIG, agent_daily=BIG), timeout=5.0)
    responder = DecisionResponder(nc, quota, SUBJECT)
    await responder.start()
    await nc.flush()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # until the parent closes it
    await responder.stop()
    await nc.close()
    await redis.aclose()


async def measure(call: Callable[[int], Awaitable[object]], concurrency: int,
                  seconds: float) -> dict[str, float]:
    async def worker(i: int, until: float, out: list[float] | None) -> int:
        n = 0
        perf = time.perf_counter
        while perf() < until:
            t0 = perf()
            await call(i * 100_003 + n)
            if out is not None:
                out.append(perf() - t0)
            n += 1
        return n

    warm_until = time.perf_counter() + 0.5
    await asyncio.gather(*(worker(i, warm_until, None) for i in range(concurrency)))
    lat: list[float] = []
    start = time.perf_counter()
    counts = await asyncio.gather(*(worker(i, start + seconds, lat) for i in range(concurrency)))
    wall = time.perf_counter() - start
    return {"calls": sum(counts), "per_s": sum(counts) / wall, "p50_ms": pct(lat, 50) * 1000,
            "p99_ms": pct(lat, 99) * 1000, "mean_ms": statistics.fmean(lat) * 1000}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--redis-url")
    ap.add_argument("--nats-url")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    work = Path(tempfile.mkdtemp(prefix="wemcp-bench-rl-"))
    servers = []
    redis_url, nats_url = args.redis_url, args.nats_url
    if not redis_url:
        r = EmbeddedRedis(work / "redis", persistent=False)
        r.start()
        servers.append(r)
        redis_url = r.url
    if not nats_url:
        n = EmbeddedNats(work / "nats")
        n.start()
        servers.append(n)
        nats_url = n.url
    responder = subprocess.Popen([sys.executable, __file__, "--responder", nats_url, redis_url],  # noqa: ASYNC220
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert responder.stdout is not None and responder.stdout.readline().strip() == b"ready"
        redis = Redis.from_url(redis_url)
        await redis.flushdb()
        nc = await nats.connect(nats_url)
        quota = QuotaClient(redis, StaticPolicies(server_daily=BIG, agent_daily=BIG), timeout=5.0)
        remote = NatsQuotaClient(nc, SUBJECT, timeout=5.0)
        users = [str(uuid.uuid4()) for _ in range(1000)]
        rnd = random.Random(7)
        slugs = [f"server-{i}" for i in range(50)]

        def pick(i: int) -> tuple[str, str]:
            return users[i % 1000], slugs[rnd.randrange(50)]

        async def incr(i: int) -> object:
            u, s = pick(i)
            return await redis.incr(f"ratelimit:bench:{s}:{u}")

        async def decide_inproc(i: int) -> object:
            u, s = pick(i)
            d = await quota.decide(u, "server", s)
            assert d.allowed, d
            return d

        async def decide_nats(i: int) -> object:
            u, s = pick(i)
            d = await remote.decide(u, "server", s)
            assert d.allowed, d
            return d

        async def decide_own_key(i: int) -> object:
            u, s = pick(i)
            return await quota.decide(u, "server", s, key_source="vault")

        modes = [("redis INCR (baseline)", incr), ("in-process client (Lua)", decide_inproc),
                 ("NATS request/reply", decide_nats), ("own key (no I/O)", decide_own_key)]
        info = (f"machine: {os.cpu_count()} cpus (nproc), {platform.machine()}, {platform.system()} "
                f"{platform.release()}; python {platform.python_version()}; redis-server "
                f"{(await redis.info('server'))['redis_version']} (embedded, local TCP); nats-server "
                f"{nc._server_info.get('version', '?')} (embedded, local TCP); NATS responder in its own "
                f"process; load average at start {os.getloadavg()[0]:.2f}")
        print(info)
        print(f"method: {args.seconds:g} s per cell after 0.5 s warm-up; latency per call (perf_counter); "
              f"1000 users x 50 servers; limits out of reach (every decision runs check+consume)\n")
        print(f"{'mode':<26}{'conc':>5}{'calls':>9}{'per s':>10}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
        rows = []
        for c in levels:
            for name, fn in modes:
                m = await measure(fn, c, args.seconds)
                rows.append((name, c, m))
                print(f"{name:<26}{c:>5}{m['calls']:>9.0f}{m['per_s']:>10.0f}{m['p50_ms']:>9.3f}"
                      f"{m['p99_ms']:>9.3f}{m['mean_ms']:>9.3f}", flush=True)
        print(f"\nerrors: in-process redis_errors={quota.stats.redis_errors}, "
              f"nats unavailable={remote.errors}; load average at end {os.getloadavg()[0]:.2f}")
        await nc.close()
        await redis.aclose()
    finally:
        if responder.stdin:
            responder.stdin.close()
        try:
            responder.wait(10)
        except subprocess.TimeoutExpired:
            responder.kill()
        for s in reversed(servers):
            s.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--responder":
        asyncio.run(responder_main(sys.argv[2], sys.argv[3]))
    else:
        asyncio.run(main())
