"""Deployer benchmark: time from spec to a running, introspected server per package kind (cold and
warm cache), and memory per idle hosted server.

Method: the same code path the deployer worker runs (LocalDeployer.deploy + introspection through the
bridge), without Postgres/NATS (their share is a few ms). "cold" uses an empty data dir (empty npm and
uv caches: everything is downloaded); "warm" deploys the same version again after its prefix was
deleted (downloads come from the cache) and "hot" redeploys an installed version. Memory is the RSS
sum of each idle child's process tree after start-up.

    .venv/bin/python bench/deployer_bench.py [--idle 5]
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

from wemcp.deployer import sandbox
from wemcp.deployer.backends.base import Target
from wemcp.deployer.backends.local import LocalDeployer
from wemcp.deployer.bridge import Bridge
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


async def deploy_once(local: LocalDeployer, slug: str, spec: dict) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = await local.deploy(Target(slug, uuid.uuid4(), parse_spec(spec)), progress)
    listing = await introspect(out.introspect_url, mode="legacy")
    return time.perf_counter() - t0, len(listing.tools)


def tree_rss(pid: int) -> int:
    p = psutil.Process(pid)
    return sum(x.memory_info().rss for x in [p, *p.children(recursive=True)])


async def main(idle: int) -> None:
    base = Path(".data/bench-deployer").resolve()  # noqa: ASYNC240
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    os.chmod(base, 0o755)
    caps = sandbox.probe()
    (base / "run").mkdir()
    os.chmod(base / "run", 0o711)
    bridge = Bridge(caps=caps, limits=sandbox.Limits(), run_dir=base / "run", idle_seconds=3600)
    await bridge.start()
    installer = Installer(base, archive_dir=Path(tempfile.mkdtemp()), venv_python="/usr/bin/python3")
    local = LocalDeployer(installer, bridge)
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total // 2**20} MiB RAM, {platform.platform()}; sandbox={caps.mode} "
          f"own_uid={caps.own_uid} netns={caps.netns}")
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
    await bridge.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=int, default=5)
    asyncio.run(main(ap.parse_args().idle))
