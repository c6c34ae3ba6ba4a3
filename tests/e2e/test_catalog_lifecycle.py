"""Catalog end to end as a real process (`wemcp-catalog` on a free port, HTTP over a socket), with
real server.deployed events on JetStream standing in for the deployer: submit → deployed → detail
shows tools → found by a Chinese query, an English query and a misspelled name → disable → gone
within 1 s (measured) → enable → back."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx2 as httpx
import nats
import pytest

from wemcp.common.events.servers import ServerDeployed, ToolInfo
from wemcp.common.identity import Identity
from wemcp.common.trust import PlatformHeaders
from wemcp.devstack.infra import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean_db", "clean_bus")]

# straight to the catalog's port, as the gateway would call it (its signed service assertion)
USER = PlatformHeaders("catalog", Identity(uuid.UUID(int=5), "user"), issuer="gateway")
ADMIN = PlatformHeaders("catalog", Identity(uuid.UUID(int=6), "admin"), issuer="gateway")


async def _until(pred, timeout=20.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while True:
        v = await pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def test_catalog_process_lifecycle(infra, tmp_path: Path):
    port = free_port()
    env = {**os.environ, **infra.env(), "WEMCP_CATALOG_PORT": str(port), "LOG_LEVEL": "warning",
           "WEMCP_BUS_ACK_WAIT_SECONDS": "5"}
    exe = Path(sys.executable).with_name("wemcp-catalog")
    log = (tmp_path / "catalog.log").open("wb")
    proc = subprocess.Popen([str(exe)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:
            async def healthy():
                assert proc.poll() is None, (tmp_path / "catalog.log").read_text()[-2000:]
                try:
                    return (await c.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False
            await _until(healthy, timeout=60)

            r = await c.post("/api/v1/servers", headers=USER, json={
                "mcpServers": {"weather": {"command": "npx", "args": ["-y", "@e2e/amap-weather@2.0.0"]}},
                "title": "高德天气 Amap Weather",
                "description": "查询城市实时天气与天气预报 / live weather and forecasts for Chinese cities"})
            assert r.status_code == 202, r.text
            acc = r.json()
            nc = await nats.connect(infra.nats_url)
            ev = ServerDeployed(server_id=uuid.UUID(acc["id"]), slug=acc["slug"], tools=[
                ToolInfo(name="forecast", description="天气预报", input_schema={"type": "object"})])
            await nc.jetstream().publish(ev.subject, ev.model_dump_json().encode(),
                                         headers={"Nats-Msg-Id": str(ev.event_id)})
            await nc.close()

            async def detail():
                d = await c.get(f"/api/v1/servers/{acc['slug']}")
                return d.json() if d.status_code == 200 and d.json()["searchable"] else None
            d = await _until(detail)
            assert [t["name"] for t in d["tools"]] == ["forecast"]

            async def top(q):
                res = await c.post("/api/v1/servers/search", json={"query": q})
                return [i["slug"] for i in res.json()["items"]]
            for q in ("天气预报", "weather forecast", "amap wether"):
                assert (await top(q))[:1] == [acc["slug"]], q

            t0 = time.perf_counter()
            assert (await c.post(f"/api/v1/servers/{acc['slug']}/disable", headers=ADMIN)).status_code == 200

            async def gone():
                return acc["slug"] not in await top("天气预报")
            await _until(gone, timeout=5)
            took = time.perf_counter() - t0
            print(f"\ne2e disable → gone from search: {took * 1000:.0f} ms")
            assert took < 1.0
            assert (await c.post(f"/api/v1/servers/{acc['slug']}/enable", headers=ADMIN)).status_code == 200

            async def back():
                return acc["slug"] in await top("weather forecast")
            await _until(back, timeout=5)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
