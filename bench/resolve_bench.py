"""Resolve time of unpinned submissions (catalog ``resolve.py``): one lookup of the latest release
against the real npm registry and PyPI JSON API (the machine's registries, through the egress policy,
the catalog's one client, so connections are reused: what a submission after the cache's TTL pays;
the first lookup, which opens the connection, is shown apart), then the cached answer.

    .venv/bin/python bench/resolve_bench.py [--rounds 7]

Prints wall-clock p50/max per registry and the CPU time this process spent per lookup (wall time is
mostly the registry's round trip; CPU is what the catalog pays)."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from wemcp.catalog.resolve import Resolver
from wemcp.common.netpolicy import EgressPolicy

PACKAGES = [("npm", "@modelcontextprotocol/server-everything"), ("npm", "@baidumap/mcp-server-baidu-map"),
            ("pypi", "mcp-server-time")]


async def main(rounds: int) -> None:
    print(f"load average {os.getloadavg()[0]:.1f} at start; {rounds} rounds, cache off for cold lookups")
    for registry, name in PACKAGES:
        cold = Resolver(EgressPolicy(""), ttl=0)
        c0, t0 = time.process_time(), time.perf_counter()
        version = await cold.latest(registry, name, "bench")
        first_wall, first_cpu = time.perf_counter() - t0, time.process_time() - c0
        walls, cpus = [], []
        for _ in range(rounds):
            c0, t0 = time.process_time(), time.perf_counter()
            version = await cold.latest(registry, name, "bench")
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        warm = Resolver(EgressPolicy(""), ttl=60)
        await warm.latest(registry, name, "bench")
        await warm.aclose()
        t0 = time.perf_counter()
        for _ in range(1000):
            await warm.latest(registry, name, "bench")
        cached_us = (time.perf_counter() - t0) / 1000 * 1e6
        await cold.aclose()
        print(f"{registry:4} {name:42} -> {version:12} "
              f"first {first_wall * 1000:5.0f} ms (CPU {first_cpu * 1000:4.0f} ms); "
              f"uncached p50 {statistics.median(walls) * 1000:5.0f} ms "
              f"max {max(walls) * 1000:6.0f} ms, CPU {statistics.median(cpus) * 1000:5.1f} ms/lookup; "
              f"cached {cached_us:5.1f} µs")
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    asyncio.run(main(ap.parse_args().rounds))
