"""Crawler: how fast a registry crawl walks and records entries, and what an incremental re-run costs.

Method
- Embedded Postgres 18 (fsync on) and embedded NATS JetStream in a temporary folder; the crawler
  runs in this process (its real runtime: outbox relay publishing to JetStream).
- A loopback stand-in of the official MCP registry (wemcp.testkit.registries, the
  documented ``GET /v0.1/servers`` shape) serves N entries (npm packages, one env var each).
- Run 1: ``run_crawl("registry")`` from nothing, page size 100, no pacing
  (``CRAWL_REQUEST_INTERVAL_SECONDS=0``): wall time, entries/s, pages; every entry is new, so each
  page is one transaction with 100 ``discovered`` rows and 100 ``crawler.discovered`` events.
- Run 2: the same registry again: ``updated_since`` = run 1's start; the stand-in filters, nothing
  changed, so one page and no event.
- Run 3: every entry updated (new version) and the watermark cleared: a full walk where every entry
  is re-described (fingerprint changed).

    .venv/bin/python bench/crawler_bench.py [--entries 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from pathlib import Path


async def body(db: str, nats_url: str, n: int) -> list[str]:
    from sqlalchemy import func, select, update

    from wemcp.common.service import Runtime
    from wemcp.crawler.config import Settings
    from wemcp.crawler.crawl import run_crawl
    from wemcp.crawler.main import SPEC
    from wemcp.crawler.models import CrawlRun, CrawlState, bus_tables
    from wemcp.testkit.registries import registry_entry, stand_ins

    out: list[str] = []
    async with stand_ins() as reg:
        reg.registry = [registry_entry(f"io.github.bench/server-{i:05d}", "1.0.0", npm=f"@bench/server-{i:05d}",
                                       updated="2026-11-01T00:00:00Z") for i in range(n)]
        settings = Settings(database_url=db, nats_url=nats_url, egress_allow="127.0.0.1", registry_url=reg.base,
                            crawl_request_interval_seconds=0, crawl_page_size=100, log_level="warning")
        runtime = Runtime(SPEC, settings)
        await runtime.open()
        try:
            async def timed(label: str) -> None:
                t0 = time.perf_counter()
                run_id = await run_crawl(runtime, "registry", "admin")
                dt = time.perf_counter() - t0
                assert runtime.sessions is not None
                async with runtime.sessions() as s:
                    run = await s.get(CrawlRun, run_id)
                    events = (await s.execute(select(func.count()).select_from(bus_tables.outbox))).scalar_one()
                assert run is not None
                out.append(f"{label}: {dt:.2f} s, found {run.found}, new {run.new}, updated {run.updated}, "
                           f"pages {run.pages}, {run.found / dt:.0f} entries/s, outbox rows so far {events}")

            await timed("run 1 (all new)")
            await timed("run 2 (incremental, nothing changed)")
            reg.registry = [registry_entry(f"io.github.bench/server-{i:05d}", "1.0.1", npm=f"@bench/server-{i:05d}",
                                           updated="2026-11-02T00:00:00Z") for i in range(n)]
            async with runtime.sessions() as s, s.begin():
                await s.execute(update(CrawlState).values(watermark=None))
            await timed("run 3 (all re-described)")
        finally:
            await runtime.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=2000)
    args = ap.parse_args()
    from wemcp.common.migrations import upgrade
    from wemcp.devstack.infra import EmbeddedNats, EmbeddedPostgres

    work = Path(tempfile.mkdtemp(prefix="wemcp-crawler-bench-"))
    pg, nats = EmbeddedPostgres(work / "pg", durable=True), EmbeddedNats(work / "nats")
    pg.start()
    nats.start()
    try:
        upgrade("crawler", pg.url)
        lines = asyncio.run(body(pg.url, nats.url, args.entries))
    finally:
        nats.stop()
        pg.stop()
    print(f"crawler bench: {args.entries} registry entries; {platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}")
    for line in lines:
        print("  " + line)


if __name__ == "__main__":
    main()
