"""Two gateway *processes* (``python -m wemcp.gateway.main``, as production starts it, each announcing
its peer URL) behind the loopback round-robin balancer: the official client in both eras, a legacy SSE
session and a 2026 client's parked call all work through whichever process each request reaches. (The
in-process pair of test_replicas.py runs the router's whole test set; this one shows the same with
real processes, routes learnt from NATS as deployed servers' are.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2 as httpx
import pytest

from services.gateway.tests.balancer import RoundRobin
from services.gateway.tests.gateway_testkit import mcp_client, text_of
from wemcp.common.bus import ensure_streams
from wemcp.common.events.servers import Endpoint, ServerDeployed, ServerSubmitted
from wemcp.devstack.infra import free_port, wait_port
from wemcp.devstack.testing import serve_app
from wemcp.testkit.upstream import serve_upstream

pytestmark = pytest.mark.asyncio
MODERN = {"mcp-protocol-version": "2026-07-28"}
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"sampling": {}},
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"}}


@contextlib.asynccontextmanager
async def gateways(infra, tmp_path: Path, n: int = 2) -> AsyncIterator[list[str]]:
    procs: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for i in range(n):
            port = free_port()
            env = {**os.environ, "NATS_URL": infra.nats_url, "REDIS_URL": infra.redis_url,
                   "DATABASE_URL": "postgresql://unused@127.0.0.1:1/unused", "LOG_FORMAT": "json",
                   "WEMCP_GATEWAY_HOST": "127.0.0.1", "WEMCP_GATEWAY_PORT": str(port),
                   "WEMCP_GATEWAY_PEER_URL": f"http://127.0.0.1:{port}",
                   "WEMCP_GATEWAY_AUTH_URL": "http://127.0.0.1:1", "WEMCP_GATEWAY_SYSTEM_KEYS_FROM_VAULT": "false",
                   "WEMCP_GATEWAY_SPOOL_DIR": str(tmp_path / f"spool-{i}"),
                   "WEMCP_GATEWAY_MCP_KEEPALIVE_SECONDS": "0.5"}
            env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
            log = open(tmp_path / f"gateway-{i}.log", "wb")
            procs.append(subprocess.Popen([sys.executable, "-m", "wemcp.gateway.main"], stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env))
            log.close()
            urls.append(f"http://127.0.0.1:{port}")
        for u, p in zip(urls, procs, strict=True):
            await asyncio.to_thread(wait_port, int(u.rsplit(":", 1)[1]), 90, p, "gateway")
        yield urls
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def publish_route(infra, slug: str, url: str) -> None:
    import nats

    nc = await nats.connect(infra.nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        sid = uuid.uuid4()
        for ev in (ServerSubmitted(server_id=sid, slug=slug, name=f"io.test/{slug}",
                                   spec={"packages": [], "remotes": []}),
                   ServerDeployed(server_id=sid, slug=slug, endpoints=[Endpoint(url=url)])):
            await js.publish(ev.subject, ev.model_dump_json().encode(), stream=ev.stream,
                             headers={"Nats-Msg-Id": str(ev.event_id)})
    finally:
        await nc.close()


async def routed(urls: list[str], slug: str) -> None:
    """Until every gateway process serves ``slug`` (it learnt the route from NATS)."""
    async with httpx.AsyncClient() as h:
        for u in urls:
            for _ in range(300):
                r = await h.post(f"{u}/mcp/{slug}", headers=MODERN, json={
                    "jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": META}})
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"{u} never routed {slug}: {r.status_code} {r.text}")


@pytest.mark.timeout(240)
async def test_two_gateway_processes_behind_a_round_robin_balancer(infra, clean_bus, clean_redis, tmp_path):
    from mcp.client.session import ClientSession
    from mcp.client.sse import sse_client

    async with serve_upstream("both", interactive=True) as both, \
            serve_upstream("legacy", json_response=False, interactive=True) as old, gateways(infra, tmp_path) as urls:
        await publish_route(infra, "both", both)
        await publish_route(infra, "old", old)
        await routed(urls, "both")
        await routed(urls, "old")
        balancer = RoundRobin(urls)
        try:
            async with serve_app(balancer) as front:
                for slug in ("both", "old"):
                    for mode in ("auto", "legacy"):  # 2026-07-28 and a 2025 session
                        async with mcp_client(f"{front}/mcp/{slug}", mode=mode) as c:
                            for n in range(4):
                                r = await c.call_tool("echo", {"text": f"{slug}-{mode}-{n}"})
                                assert text_of(r) == f"{slug}-{mode}-{n}"
                    async with sse_client(f"{front}/mcp/{slug}/sse") as (r, w), ClientSession(r, w) as s:
                        await s.initialize()
                        for n in range(4):
                            assert text_of(await s.call_tool("add", {"a": n, "b": 1})) == str(n + 1)
                # a 2026 client's parked call (2025 server asks for sampling): the retry carries the
                # requestState of the process that parked the call, whichever process it reaches
                async with httpx.AsyncClient(timeout=30) as h:
                    for attempt in range(2):  # the first call lands on each process in turn
                        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                            "name": "summarise", "arguments": {"topic": f"pears{attempt}"}, "_meta": META}}
                        r = await h.post(f"{front}/mcp/old", headers=MODERN, json=call)
                        first = r.json()["result"]
                        assert first["resultType"] == "input_required", first
                        (key, _), = first["inputRequests"].items()
                        answer = {"role": "assistant", "model": "m", "content": {"type": "text", "text": "ok"}}
                        retry = {**call, "id": 2, "params": {**call["params"], "inputResponses": {key: answer},
                                                              "requestState": first["requestState"]}}
                        r = await h.post(f"{front}/mcp/old", headers=MODERN, json=retry)
                        assert r.json()["result"]["resultType"] == "complete", r.text
                        assert r.json()["result"]["content"][0]["text"] == "m said: ok"
                        await h.post(f"{front}/mcp/old", headers=MODERN, json={  # moves the turn on by one
                            "jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": META}})
            assert min(balancer.hits.values()) > 20, balancer.hits
        finally:
            await balancer.close()
