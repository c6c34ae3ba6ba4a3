"""Outbox throughput and latency: from the producer's commit to the consumer's commit + ack.

Real Postgres (embedded, fsync on), real NATS JetStream, the real relay and the real consumer
wrapper (processed_events + handler in one transaction), both in one process on one event loop:

    producer: N transactions, each writing one probe row through the outbox (add_event)
    relay:    LISTEN/NOTIFY-woken, batches of up to 256, Nats-Msg-Id = event_id
    consumer: durable pull consumer; handler inserts a receipt row

Latency per event = consumer's received_at (DB clock) - event.occurred_at (set just before commit).
Throughput = events / (last receipt - first commit). Usage:

    .venv/bin/python bench/outbox_throughput.py [--events 2000] [--burst]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchkit import pct
from sqlalchemy import func, select

from wemcp.common.bus import Subscription
from wemcp.common.config import ServiceSettings
from wemcp.common.events.base import ProbeRecorded
from wemcp.common.logging import configure_logging
from wemcp.common.migrations import upgrade
from wemcp.common.outbox import add_event
from wemcp.common.probes import make_probe_handler
from wemcp.common.service import ServiceSpec, running
from wemcp.deployer.models import bus_tables as deployer_tables
from wemcp.deployer.models import probe_receipts
from wemcp.devstack.infra import EmbeddedNats, EmbeddedPostgres
from wemcp.goods.models import bus_tables as goods_tables


async def reset_probes(nats_url: str) -> None:
    """Each run starts on an empty PROBES stream: a new durable replays the stream from the start."""
    import nats as nats_client

    from wemcp.common.bus import ensure_streams

    nc = await nats_client.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    for info in await js.consumers_info("PROBES"):
        await js.delete_consumer("PROBES", info.name)
    await js.purge_stream("PROBES")
    await nc.close()


async def run(n: int, concurrency: int, db_url: str, nats_url: str, workers: int = 1) -> dict[str, float]:
    settings = ServiceSettings(database_url=db_url, nats_url=nats_url, log_level="warning")
    producer = ServiceSpec(name="goods", title="producer", tables=goods_tables)
    consumer = ServiceSpec(name="deployer", title="consumer", tables=deployer_tables,
                           subscriptions=[Subscription(ProbeRecorded, make_probe_handler(probe_receipts),
                                                       max_workers=workers,
                                                       durable=f"deployer-bench-w{workers}")])
    note = f"bench-{time.time_ns()}"
    async with running(producer, settings) as p_app, running(consumer, settings) as c_app:
        sessions = p_app.state.runtime.sessions
        sem = asyncio.Semaphore(concurrency)

        async def produce(i: int) -> None:
            async with sem, sessions() as s, s.begin():
                await add_event(s, goods_tables, ProbeRecorded(seq=i, note=note))

        t0 = time.perf_counter()
        await asyncio.gather(*(produce(i) for i in range(n)))
        commit_s = time.perf_counter() - t0
        c_sessions = c_app.state.runtime.sessions
        while True:
            async with c_sessions() as s:
                got = (await s.execute(select(func.count()).where(probe_receipts.c.note == note))).scalar_one()
            if got >= n:
                break
            await asyncio.sleep(0.01)
        total_s = time.perf_counter() - t0
        async with c_sessions() as s:
            rows = (await s.execute(select(probe_receipts.c.occurred_at, probe_receipts.c.received_at)
                                    .where(probe_receipts.c.note == note))).all()
    lat = [(r.received_at - r.occurred_at).total_seconds() * 1000 for r in rows]
    return {"events": n, "concurrency": concurrency, "workers": workers, "commit_s": commit_s, "total_s": total_s,
            "events_per_s": n / total_s, "p50_ms": statistics.median(lat), "p99_ms": pct(lat, 99),
            "max_ms": max(lat)}


async def single_latency(samples: int, db_url: str, nats_url: str) -> dict[str, float]:
    """One event at a time (the idle-system case): commit -> consumer commit."""
    settings = ServiceSettings(database_url=db_url, nats_url=nats_url, log_level="warning")
    producer = ServiceSpec(name="goods", title="producer", tables=goods_tables)
    consumer = ServiceSpec(name="deployer", title="consumer", tables=deployer_tables,
                           subscriptions=[(ProbeRecorded, make_probe_handler(probe_receipts))])
    note = f"single-{time.time_ns()}"
    async with running(producer, settings) as p_app, running(consumer, settings) as c_app:
        for i in range(samples):
            async with p_app.state.runtime.sessions() as s, s.begin():
                await add_event(s, goods_tables, ProbeRecorded(seq=i, note=note))
            while True:
                async with c_app.state.runtime.sessions() as s:
                    got = (await s.execute(select(func.count()).where(probe_receipts.c.note == note))).scalar_one()
                if got > i:
                    break
                await asyncio.sleep(0.001)
        async with c_app.state.runtime.sessions() as s:
            rows = (await s.execute(select(probe_receipts.c.occurred_at, probe_receipts.c.received_at)
                                    .where(probe_receipts.c.note == note))).all()
    lat = [(r.received_at - r.occurred_at).total_seconds() * 1000 for r in rows]
    return {"samples": samples, "p50_ms": statistics.median(lat), "p99_ms": pct(lat, 99)}


async def relay_rate(n: int, concurrency: int, db_url: str, nats_url: str, live: bool) -> dict[str, float]:
    """The relay alone (commit -> PubAck -> row marked sent), no consumer. ``live``: producers commit
    while the relay runs (LISTEN-woken), timed from the first commit until nothing is pending.
    Otherwise ``n`` rows are staged first (no relay running) and one relay drains them."""
    import nats as nats_client

    from wemcp.common.outbox import OutboxRelay

    settings = ServiceSettings(database_url=db_url, nats_url=nats_url, log_level="warning")
    spec = ServiceSpec(name="goods", title="producer", tables=goods_tables, uses_bus=live)
    note = f"relay-{time.time_ns()}"
    t = goods_tables.outbox
    async with running(spec, settings) as app:
        sessions = app.state.runtime.sessions
        sem = asyncio.Semaphore(concurrency)

        async def produce(i: int) -> None:
            async with sem, sessions() as s, s.begin():
                await add_event(s, goods_tables, ProbeRecorded(seq=i, note=note))

        async def pending() -> int:
            async with sessions() as s:
                return (await s.execute(select(func.count()).select_from(t).where(t.c.published_at.is_(None)))
                        ).scalar_one()

        if live:
            t0 = time.perf_counter()
            await asyncio.gather(*(produce(i) for i in range(n)))
            while await pending():  # noqa: ASYNC110 (polling the database)
                await asyncio.sleep(0.005)
            return {"events": n, "events_per_s": n / (time.perf_counter() - t0)}
        await asyncio.gather(*(produce(i) for i in range(n)))
        nc = await nats_client.connect(nats_url)
        try:
            relay = OutboxRelay(app.state.runtime.engine, goods_tables, nc.jetstream())
            t0 = time.perf_counter()
            while await relay.relay_once():
                pass
            dt = time.perf_counter() - t0
        finally:
            await nc.close()
        return {"events": n, "events_per_s": n / dt}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--single", type=int, default=200)
    ap.add_argument("--relay-only", action="store_true", help="only the relay's rate (commit -> publish)")
    args = ap.parse_args()
    configure_logging("bench", "warning", "console")
    work = Path(tempfile.mkdtemp(prefix="wemcp-bench-"))
    pg = EmbeddedPostgres(work / "pg", durable=True)
    nats = EmbeddedNats(work / "nats")
    pg.start()
    nats.start()
    try:
        for svc in ("goods", "deployer"):
            upgrade(svc, pg.url)
        print(f"machine: {platform.machine()} nproc={os.cpu_count()} python={sys.version.split()[0]} "
              f"postgres=embedded(fsync on) nats=embedded JetStream(file)")
        asyncio.run(reset_probes(nats.url))
        for live in (False, True):
            r = asyncio.run(relay_rate(args.events, args.concurrency, pg.url, nats.url, live))
            what = (f"{args.concurrency} producers committing while the relay runs (bound by the producers' "
                    f"commits, one event each: the relay keeps up when this equals their commit rate)" if live
                    else "a backlog of committed rows, one relay draining it")
            print(f"relay alone (commit -> PubAck -> marked sent), {r['events']} events, {what}: "
                  f"{r['events_per_s']:.0f} events/s")
        if args.relay_only:
            return 0
        asyncio.run(reset_probes(nats.url))
        single = asyncio.run(single_latency(args.single, pg.url, nats.url))
        print(f"idle latency, one event at a time, {single['samples']} samples: "
              f"p50 {single['p50_ms']:.2f} ms, p99 {single['p99_ms']:.2f} ms")
        for conc, workers in ((1, 1), (args.concurrency, 1), (args.concurrency, 16)):
            asyncio.run(reset_probes(nats.url))
            r = asyncio.run(run(args.events, conc, pg.url, nats.url, workers))
            print(f"burst of {r['events']} events, {r['concurrency']} concurrent producers, "
                  f"consumer max_workers={r['workers']}: "
                  f"{r['events_per_s']:.0f} events/s commit->consumer ack; latency p50 {r['p50_ms']:.1f} ms, "
                  f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms (commits took {r['commit_s']:.2f} s)")
    finally:
        nats.stop()
        pg.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
