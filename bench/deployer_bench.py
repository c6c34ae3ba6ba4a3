"""Deployer benchmark: time from spec to a running, introspected server per package kind (cold and
warm cache), and memory per idle hosted server.

Method: the same code path the deployer worker runs (LocalDeployer.deploy + introspection through the
bridge), without Postgres/NATS (their share is a few ms). "cold" uses an empty data dir (empty npm and
uv caches: everything is downloaded); "warm" deploys the same version again after its prefix was
deleted (downloads come from the cache) and "hot" redeploys an installed version. Memory is the RSS
sum of each idle child's process tree after start-up.

Density (``--density 500 --running 50``, issue 15 part 5): that many hosted servers registered on one
bridge (the two packages repeat: installs are shared by package@version, so disk is counted once per
install and divided per server), ``--running`` of them with a child at once. It reports disk per
server, memory per running server (the child's process tree PSS from ``/proc/<pid>/smaps_rollup``,
plus the bridge process's share, which includes the in-process egress proxy), memory per idle (registered,
stopped) server, cold-start latency (stopped installed server → first ``tools/list`` answered, wall
and the child's own CPU) on an otherwise idle bridge and while the running servers take warm calls,
and how many servers one 24 GiB machine holds.

    .venv/bin/python bench/deployer_bench.py [--idle 5]
    .venv/bin/python bench/deployer_bench.py --density 500 --running 50 --cold 20 [--skip-deploy]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from benchkit import pct

from wemcp.common.trust import HEADER_ASSERTION, Issuer, environment_ring
from wemcp.deployer.backends.base import Target
from wemcp.deployer.backends.local import LocalDeployer
from wemcp.deployer.bridge import Bridge
from wemcp.deployer.config import Settings
from wemcp.deployer.install import Installer
from wemcp.deployer.introspect import introspect
from wemcp.deployer.spec import parse_spec

KINDS = {
    "npm server-everything": {"packages": [{"registryType": "npm", "version": "2026.8.31",
                                            "identifier": "@modelcontextprotocol/server-everything"}]},
    "pypi mcp-server-time": {"packages": [{"registryType": "pypi", "identifier": "mcp-server-time",
                                           "version": "2026.10.19"}]},
}


async def progress(step: str, detail: str | None = None) -> None:
    return None


ISSUER = Issuer(environment_ring(), "deployer")  # the bridge answers only the slug's platform credential


async def deploy_once(local: LocalDeployer, slug: str, spec: dict) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = await local.deploy(Target(slug, uuid.uuid4(), parse_spec(spec)), progress)
    listing = await introspect(out.introspect_url, mode="legacy",
                               headers={HEADER_ASSERTION: ISSUER.bridge_token(slug)})
    return time.perf_counter() - t0, len(listing.tools)


def tree_rss(pid: int) -> int:
    p = psutil.Process(pid)
    return sum(x.memory_info().rss for x in [p, *p.children(recursive=True)])


async def main(idle: int, density: int, running: int, cold: int, skip_deploy: bool) -> None:
    base = Path(".data/bench-deployer").resolve()  # noqa: ASYNC240
    if not skip_deploy:
        shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    # the deployer as the service builds it (sandbox probe, bridge, in-process egress proxy, installer)
    settings = Settings(data_dir=base, archive_dir=Path(tempfile.mkdtemp()), idle_seconds=3600)
    local = LocalDeployer.from_settings(settings)
    bridge, installer, caps = local.bridge, local.installer, local.bridge.caps
    await bridge.start()
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total // 2**20} MiB RAM, {platform.platform()}; sandbox={caps.mode} "
          f"own_uid={caps.own_uid} netns={caps.netns}; load average {noise()}")
    if not skip_deploy:
        await deploy_times(local, installer, bridge, idle)
    if density:
        await density_run(local, bridge, base, density, running, cold)
    print(f"load average at the end: {noise()}")
    await bridge.close()


def noise() -> str:
    """The machine's load (shared with other work): 1/5/15-minute load averages and busy CPU now."""
    la = os.getloadavg()
    return f"{la[0]:.1f}/{la[1]:.1f}/{la[2]:.1f} on {os.cpu_count()} cores, CPU busy {psutil.cpu_percent(1.0):.0f}%"


async def deploy_times(local: LocalDeployer, installer: Installer, bridge: Bridge, idle: int) -> None:
    print("| kind | cold s | warm s (cache, new prefix) | hot s (installed) | tools |")
    print("|---|---|---|---|---|")
    for i, (kind, spec) in enumerate(KINDS.items()):
        cold, n = await deploy_once(local, f"cold{i}", spec)
        await local.undeploy(f"cold{i}")
        shutil.rmtree(installer.pkgs, ignore_errors=True)
        warm, _ = await deploy_once(local, f"warm{i}", spec)
        await local.undeploy(f"warm{i}")
        hots = []
        for j in range(3):
            hot, _ = await deploy_once(local, f"hot{i}{j}", spec)
            hots.append(hot)
            await local.undeploy(f"hot{i}{j}")
        print(f"| {kind} | {cold:.1f} | {warm:.1f} | {statistics.median(hots):.2f} | {n} |")
    print()
    print("| kind | idle servers | RSS per idle server MiB (median) | servers per GiB |")
    print("|---|---|---|---|")
    for i, (kind, spec) in enumerate(KINDS.items()):
        rss = []
        for j in range(idle):
            slug = f"idle{i}-{j}"
            await deploy_once(local, slug, spec)
            child = next(iter(bridge.hosted[slug].children.values()))
            await asyncio.sleep(0.5)
            rss.append(tree_rss(child.proc.pid) / 2**20)
        med = statistics.median(rss)
        print(f"| {kind} | {idle} | {med:.1f} | {1024 / med:.0f} |")
        for j in range(idle):
            await local.undeploy(f"idle{i}-{j}")


LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


def tree(pid: int) -> list[psutil.Process]:
    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def pss(pid: int) -> int:
    """Proportional set size of one process (shared pages split among their users), bytes."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def tree_cpu(pid: int) -> float:
    return sum(sum(p.cpu_times()[:4]) for p in tree(pid))


def disk(path: Path) -> int:
    """Bytes allocated under ``path``, each inode once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


async def cold_start(bridge: Bridge, slug: str) -> tuple[float, float]:
    """Stop ``slug``'s children, then time one call: (wall s, the new child's CPU s at its answer)."""
    hosted = bridge.hosted[slug]
    await bridge.scale_to_zero(hosted)
    t0 = time.perf_counter()
    reply = await bridge.handle(slug, {}, LIST)
    wall = time.perf_counter() - t0
    assert reply and "result" in reply, reply
    child = next(iter(hosted.children.values()))
    return wall, tree_cpu(child.proc.pid)


async def density_run(local: LocalDeployer, bridge: Bridge, base: Path, n: int, running: int, cold: int) -> None:
    import tracemalloc

    specs = list(KINDS.items())
    installed = []
    for _kind, spec in specs:
        parsed = parse_spec(spec)
        installed.append((parsed, await local._install(parsed)))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    slugs: list[tuple[str, str]] = []
    for i in range(n):
        kind, _ = specs[i % len(specs)]
        parsed, inst = installed[i % len(specs)]
        slug = f"d{i}"
        bridge.register(local.hosted_for(Target(slug, uuid.uuid4(), parsed), inst))
        slugs.append((slug, kind))
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    idle_bytes = sum(d.size_diff for d in after.compare_to(before, "filename")) / n
    pkgs = disk(local.installer.pkgs)
    print(f"\n### Density: {n} hosted servers ({', '.join(k for k, _ in specs)} alternating), "
          f"{running} running at once\n")
    print(f"- disk: installs {pkgs / 2**20:.0f} MiB for {len(specs)} packages, shared by content "
          f"(package@version) → **{pkgs / n / 2**20:.2f} MiB per server** at {n} servers; "
          f"{disk(local.installer.pkgs / 'npm') / 2**20:.0f} MiB npm, "
          f"{disk(local.installer.pkgs / 'pypi') / 2**20:.0f} MiB PyPI")
    print(f"- memory per idle (registered, stopped) server in the bridge: {idle_bytes / 1024:.1f} KiB")

    print("\n| cold start, stopped installed server → first answer | n | wall p50 s | wall p95 s | "
          "child CPU p50 s | child CPU p95 s |")
    print("|---|---|---|---|---|---|")
    idle_cold: dict[str, tuple[list[float], list[float]]] = {}
    for j, (kind, _) in enumerate(specs):
        slug = slugs[j][0]
        walls, cpus = [], []
        await cold_start(bridge, slug)  # page cache warm, as on a machine that started it before
        for _ in range(cold):
            w, c = await cold_start(bridge, slug)
            walls.append(w)
            cpus.append(c)
        await bridge.scale_to_zero(bridge.hosted[slug])
        idle_cold[kind] = (walls, cpus)
        print(f"| {kind}, nothing else running | {cold} | {statistics.median(walls):.2f} | {pct(walls, 95):.2f} | "
              f"{statistics.median(cpus):.2f} | {pct(cpus, 95):.2f} |")

    # start `running` children (the first `running` servers), a few at a time
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(4)

    async def start(slug: str) -> None:
        async with sem:
            reply = await bridge.handle(slug, {}, LIST)
            assert reply and "result" in reply, reply

    await asyncio.gather(*(start(s) for s, _ in slugs[:running]))
    ramp = time.perf_counter() - t0
    await asyncio.sleep(2)
    per_kind: dict[str, list[tuple[int, int]]] = {}
    for slug, kind in slugs[:running]:
        child = next(iter(bridge.hosted[slug].children.values()))
        procs = tree(child.proc.pid)
        per_kind.setdefault(kind, []).append((sum(pss(p.pid) for p in procs),
                                              sum(p.memory_info().rss for p in procs)))
    bridge_pss = pss(os.getpid())
    bridge_rss = psutil.Process().memory_info().rss
    all_pss = [x[0] for v in per_kind.values() for x in v]
    child_pss = statistics.mean(all_pss)
    per_running = child_pss + bridge_pss / running
    print(f"\n{running} children started in {ramp:.1f} s (4 at a time)\n")
    print("| running server | children PSS MiB (mean) | children RSS MiB (mean) |")
    print("|---|---|---|")
    for kind, v in per_kind.items():
        print(f"| {kind} | {statistics.mean(x[0] for x in v) / 2**20:.1f} | "
              f"{statistics.mean(x[1] for x in v) / 2**20:.1f} |")
    print(f"\n- bridge process (this bench process: bridge + installer + {n} registrations): PSS "
          f"{bridge_pss / 2**20:.0f} MiB (RSS {bridge_rss / 2**20:.0f} MiB) → {bridge_pss / running / 2**20:.1f} MiB "
          f"per running server (the egress proxy runs in this process: its share is included)")
    print(f"- **memory per running server: {per_running / 2**20:.1f} MiB** (children PSS mean + bridge share)")

    # cold starts while the running servers take warm calls (8 concurrent callers)
    stop = asyncio.Event()
    warm_calls = 0

    async def caller(k: int) -> None:
        nonlocal warm_calls
        while not stop.is_set():
            slug = slugs[(k * 7 + warm_calls) % running][0]
            await bridge.handle(slug, {}, LIST)
            warm_calls += 1

    callers = [asyncio.create_task(caller(k)) for k in range(8)]
    t0 = time.perf_counter()
    print("\n| cold start under load | n | wall p50 s | wall p95 s | child CPU p50 s | child CPU p95 s |")
    print("|---|---|---|---|---|---|")
    for j, (kind, _) in enumerate(specs):
        slug = slugs[running + j][0]  # a server that is not among the running ones
        walls, cpus = [], []
        for _ in range(cold):
            w, c = await cold_start(bridge, slug)
            walls.append(w)
            cpus.append(c)
        await bridge.scale_to_zero(bridge.hosted[slug])
        print(f"| {kind}, {running} running + 8 callers of warm calls | {cold} | {statistics.median(walls):.2f} | "
              f"{pct(walls, 95):.2f} | {statistics.median(cpus):.2f} | {pct(cpus, 95):.2f} |")
    stop.set()
    await asyncio.gather(*callers)
    elapsed = time.perf_counter() - t0
    print(f"\nwarm calls meanwhile: {warm_calls} in {elapsed:.0f} s ({warm_calls / elapsed:.0f}/s)")

    machine = 24 * 2**30
    reserve = 4 * 2**30  # the platform's own services, Postgres, NATS, Redis, page cache headroom
    active = (machine - reserve) / per_running
    mixed = (machine - reserve) / (0.1 * per_running + 0.9 * idle_bytes)
    print(f"\n- per 24 GiB machine (4 GiB kept for the platform): **{active:.0f} running servers**; "
          f"with 10% of installed servers running at once, {mixed:,.0f} installed (disk then: "
          f"{pkgs / n * mixed / 2**30:.1f} GiB at this package mix)")
    print(f"- {n} installed with {running} running: {running * per_running / 2**30:.2f} GiB memory, "
          f"{pkgs / 2**20:.0f} MiB disk")
    for slug, _ in slugs:
        await bridge.unregister(slug)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=int, default=5)
    ap.add_argument("--density", type=int, default=0, help="hosted servers to register (0: skip)")
    ap.add_argument("--running", type=int, default=50, help="of which running a child at once")
    ap.add_argument("--cold", type=int, default=20, help="cold starts per package and condition")
    ap.add_argument("--skip-deploy", action="store_true", help="skip the deploy-time part (keeps installs)")
    a = ap.parse_args()
    asyncio.run(main(a.idle, a.density, a.running, a.cold, a.skip_deploy))
