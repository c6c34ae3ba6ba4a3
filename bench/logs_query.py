"""Request-log query and ingestion bench (issue 18 part 3).

Embedded Postgres (durable) in a temporary folder, the crawler schema migrated, then ``--rows`` calls
spread over ``--days`` days and ``--servers`` servers generated in the database (``INSERT ... SELECT``
over ``generate_series``, indexes built after the load). Measured, through the service's own query
(``wemcp.crawler.repository.logs.query_calls``, SQLAlchemy + asyncpg, what ``GET /api/v1/logs/calls`` runs):

- a page of 50 for one caller over the last 24 h (callers drawn from the rows, so busy callers are
  drawn as often as they call);
- a page of 50 for one server filtered by status (``error``) over the last 7 days (servers drawn
  from the rows);
- the next page of each (cursor).

Then ingestion: batches of 1,000 calls written the way the consumer does (one ``COPY`` per batch in a
transaction that commits), calls/s.

    .venv/bin/python bench/logs_query.py [--rows 10000000] [--samples 200]
    .venv/bin/python bench/logs_query.py --database-url postgresql://... --no-load   # measure again
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchkit import pct
from sqlalchemy import text

from wemcp.common.db import make_engine, make_session_factory
from wemcp.common.events.calls import McpCallCompleted
from wemcp.common.migrations import upgrade
from wemcp.crawler.logs_store import Partitions, insert_calls
from wemcp.crawler.repository.logs import CallQuery, query_calls
from wemcp.devstack.infra import EmbeddedPostgres

GENERATE = """
INSERT INTO crawler.call_logs (at, event_id, user_id, server_slug, method, tool, key_source, metered, status,
                               error_code, latency_ms, request_bytes, response_bytes, in_agent_run)
SELECT CAST(:start AS timestamptz) + x.t * interval '1 day', gen_random_uuid(),
       ('00000000-0000-4000-8000-' || lpad(to_hex(floor(power(x.u, 3) * :users)::int), 12, '0'))::uuid,
       'server-' || floor(power(x.v, 2) * :servers)::int,
       CASE WHEN x.m < 0.85 THEN 'tools/call' WHEN x.m < 0.95 THEN 'tools/list' ELSE 'initialize' END,
       CASE WHEN x.m < 0.85 THEN 'tool-' || floor(x.m * 20)::int END,
       CASE WHEN x.m < 0.5 THEN 'vault' WHEN x.m < 0.8 THEN 'request' ELSE 'system' END, x.m < 0.7,
       CASE WHEN x.s < 0.90 THEN 'ok' WHEN x.s < 0.95 THEN 'error' WHEN x.s < 0.98 THEN 'refused' ELSE 'timeout' END,
       CASE WHEN x.s >= 0.90 AND x.s < 0.95 THEN -32603 WHEN x.s >= 0.95 AND x.s < 0.98 THEN -32029 END,
       5 + x.s * 400, 200 + floor(x.u * 2000)::int, 500 + floor(x.v * 50000)::int, false
FROM (SELECT random() AS t, random() AS u, random() AS v, random() AS m, random() AS s
      FROM generate_series(1, :n)) AS x
"""


async def load(url: str, rows: int, days: int, servers: int, users: int) -> None:
    engine = make_engine(url)
    today = datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    t0 = time.perf_counter()
    async with engine.begin() as conn:
        await Partitions().ensure(conn, [first + timedelta(days=d) for d in range(days + 2)])
        defs = (await conn.execute(text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'crawler' AND tablename = 'call_logs'"
        ))).all()
        for name, _ in defs:
            await conn.execute(text(f"DROP INDEX crawler.{name}"))
    per_day = rows // days
    for d in range(days):
        start = datetime.combine(first + timedelta(days=d), datetime.min.time(), UTC)
        async with engine.begin() as conn:
            await conn.execute(text(GENERATE), {"start": start, "users": users, "servers": servers, "n": per_day})
    t1 = time.perf_counter()
    async with engine.begin() as conn:
        for _, ddl in defs:
            # pg_indexes shows a partitioned index as "ON ONLY" (the parent alone); built "ON" the
            # parent it is built on every partition, as the migration's are
            await conn.execute(text(ddl.replace(" ON ONLY ", " ON ")))
    t2 = time.perf_counter()
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE crawler.call_logs"))
        size = (await conn.execute(text(
            "SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid))) FROM pg_inherits "
            "WHERE inhparent = 'crawler.call_logs'::regclass"))).scalar_one()
    await engine.dispose()
    print(f"loaded {per_day * days:,} rows over {days} days, {servers} servers, {users:,} users: "
          f"insert {t1 - t0:.0f} s, indexes {t2 - t1:.0f} s, on disk {size}")


async def measure(url: str, samples: int) -> None:
    engine = make_engine(url, pool_size=2)
    sessions = make_session_factory(engine)
    now = datetime.now(UTC)
    async with engine.connect() as conn:
        callers = (await conn.execute(text(
            "SELECT user_id FROM crawler.call_logs WHERE at >= :s AND at < now() ORDER BY random() LIMIT :n"),
            {"s": now - timedelta(hours=24), "n": samples})).scalars().all()
        servers = (await conn.execute(text(
            "SELECT server_slug FROM crawler.call_logs WHERE at >= :s AND at < now() ORDER BY random() LIMIT :n"),
            {"s": now - timedelta(days=7), "n": samples})).scalars().all()
        for label, sql in (("caller", "SELECT count(*) FROM crawler.call_logs WHERE user_id = :k AND at >= :s"),
                           ("server", "SELECT count(*) FROM crawler.call_logs WHERE server_slug = :k AND "
                                      "status = 'error' AND at >= :s")):
            key = callers[0] if label == "caller" else servers[0]
            since = now - (timedelta(hours=24) if label == "caller" else timedelta(days=7))
            n = (await conn.execute(text(sql), {"k": key, "s": since})).scalar_one()
            print(f"  e.g. {label} {key}: {n:,} matching rows in the range")
            where = ("user_id = :k" if label == "caller" else "server_slug = :k AND status = 'error'")
            plan = (await conn.execute(text(
                "EXPLAIN (ANALYZE, SUMMARY) SELECT * FROM crawler.call_logs WHERE " + where +
                " AND at >= :s AND at < :u ORDER BY at DESC, event_id DESC LIMIT 50"),
                {"k": key, "s": since, "u": now})).scalars().all()
            print("    " + "\n    ".join(plan[:14]))

    async def run(make: list[CallQuery]) -> tuple[list[float], list[float]]:
        first_ms, next_ms = [], []
        for q in make:
            async with sessions() as s:
                t = time.perf_counter()
                rows = await query_calls(s, q)
                first_ms.append((time.perf_counter() - t) * 1000)
                if len(rows) == q.limit:
                    q2 = CallQuery(**{**q.__dict__, "after": (rows[-1]["at"], rows[-1]["event_id"])})
                    t = time.perf_counter()
                    await query_calls(s, q2)
                    next_ms.append((time.perf_counter() - t) * 1000)
        return first_ms, next_ms

    caller_qs = [CallQuery(since=now - timedelta(hours=24), until=now, limit=50, user_id=u) for u in callers]
    server_qs = [CallQuery(since=now - timedelta(days=7), until=now, limit=50, server=s, status="error")
                 for s in servers]
    for label, qs in (("one caller, 24 h, page of 50", caller_qs),
                      ("one server, status=error, 7 d, page of 50", server_qs)):
        await run(qs[:10])  # warm the connection and the plan cache
        first_ms, next_ms = await run(qs)
        print(f"{label}: n={len(first_ms)} p50 {pct(first_ms, 50):.1f} ms, p95 {pct(first_ms, 95):.1f} ms, "
              f"max {max(first_ms):.1f} ms; next page n={len(next_ms)} p95 "
              f"{pct(next_ms, 95) if next_ms else 0:.1f} ms")
    await engine.dispose()


async def ingest(url: str, batches: int) -> None:
    engine = make_engine(url, pool_size=2)
    sessions = make_session_factory(engine)
    parts = Partitions()
    users = [uuid.uuid4() for _ in range(5000)]
    made = [[McpCallCompleted(user_id=random.choice(users), server_slug=f"server-{random.randrange(1000)}",
                              method="tools/call", tool="search", key_source="vault", status="ok",
                              latency_ms=random.random() * 300, request_bytes=300, response_bytes=9000)
             for _ in range(1000)] for _ in range(batches)]
    async with sessions() as s, s.begin():
        await insert_calls(s, parts, made[0], retention_days=30)
    t = time.perf_counter()
    for calls in made[1:]:
        async with sessions() as s, s.begin():
            await insert_calls(s, parts, calls, retention_days=30)
    seconds = time.perf_counter() - t
    print(f"ingestion: {1000 * (batches - 1):,} calls in {batches - 1} batches of 1,000 (one COPY and commit "
          f"each, 4 indexes, into the loaded table): {1000 * (batches - 1) / seconds:,.0f} calls/s")
    await engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--servers", type=int, default=1000)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--batches", type=int, default=31)
    ap.add_argument("--database-url", default="", help="use this database instead of a temporary one")
    ap.add_argument("--no-load", action="store_true", help="with --database-url: measure what is there")
    args = ap.parse_args()
    if args.database_url:  # a database loaded before (--no-load) or to load into
        if not args.no_load:
            upgrade("crawler", args.database_url)
            asyncio.run(load(args.database_url, args.rows, args.days, args.servers, args.users))
        asyncio.run(measure(args.database_url, args.samples))
        asyncio.run(ingest(args.database_url, args.batches))
        return
    work = Path(tempfile.mkdtemp(prefix="wemcp-logs-bench-"))
    pg = EmbeddedPostgres(work / "pg", durable=True)
    pg.start()
    try:
        upgrade("crawler", pg.url)
        asyncio.run(load(pg.url, args.rows, args.days, args.servers, args.users))
        asyncio.run(measure(pg.url, args.samples))
        asyncio.run(ingest(pg.url, args.batches))
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
