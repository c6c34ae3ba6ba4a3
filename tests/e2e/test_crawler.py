"""The crawler as a real process of the platform, through the gateway: a server crawled from a
loopback stand-in of the official MCP registry appears in search as unhosted (an admin starts the
crawl and reads the run; a plain user may do neither); a server kept from starting shows down within
two probe intervals and up within two after it is fixed — an endpoint where nothing answers, and a
server hosted by the real deployer whose process exits without its upstream key until an admin sets
it — probes made by the crawler process through the gateway process with the crawler's service
credential."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx2 as httpx
import nats
import orjson
import pytest

from tests.e2e.e2e_kit import published, submit_archive, superadmin_key, user_key
from wemcp.devstack.infra import free_port
from wemcp.devstack.sources import PING, stdio_server
from wemcp.devstack.stack import Stack
from wemcp.devstack.testing import wait_for
from wemcp.testkit.catalog import publish_route
from wemcp.testkit.registries import registry_entry, stand_ins
from wemcp.testkit.upstream import serve_upstream

pytestmark = pytest.mark.e2e
INTERVAL = 2.0


@contextlib.asynccontextmanager
async def health_reports(stack: Stack) -> AsyncIterator[Callable[[str, str], Callable[[], Any]]]:
    """The crawler's ``server.health`` reports as they come; yields ``reported(slug, status)``, a
    condition for ``wait_for``: the reports of that status for that server (None while there is none)."""
    nc = await nats.connect(stack.infra_env()["NATS_URL"])
    seen: list[dict[str, Any]] = []

    async def on(msg: Any) -> None:
        seen.append(orjson.loads(msg.data))
    await nc.subscribe("server.health", cb=on)

    def reported(slug: str, status: str) -> Callable[[], Any]:
        return lambda: [e for e in seen if e["slug"] == slug and e["status"] == status] or None
    try:
        yield reported
    finally:
        await nc.close()


@pytest.fixture
def crawler_env(stack: Stack) -> Iterator[dict[str, str]]:
    """Restarts the crawler with the settings a test gives it; restores the stack's afterwards."""
    svc = stack.services["crawler"]
    saved = dict(svc.env)

    def apply(extra: dict[str, str]) -> None:
        svc.env = {**saved, **extra}
        stack.restart_service("crawler", wait=60)
    yield apply  # type: ignore[misc]
    svc.env = saved
    stack.restart_service("crawler", wait=60)


async def test_crawl_and_probe_through_the_platform(stack: Stack, gateway_url: str, crawler_env: Any) -> None:
    admin = {"Authorization": f"Bearer {superadmin_key(stack, 'e2e-crawl-admin')}"}
    _, key = await user_key(stack, "e2e-crawl-user")
    user = {"Authorization": f"Bearer {key}"}
    async with stand_ins() as reg:
        # updated now: a registry crawl another test of this stack ran already moved the crawler's
        # updated_since past any fixed date
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        reg.registry = [registry_entry("io.github.e2e/tidewatch", "1.0.0", npm="@e2e/tidewatch-mcp",
                                       description="Tidewatch: tide tables for harbours", updated=now)]
        crawler_env({"WEMCP_CRAWLER_REGISTRY_URL": reg.base, "WEMCP_CRAWLER_CRAWL_SOURCES": '["registry"]',
                     "WEMCP_EGRESS_ALLOW": "127.0.0.1", "WEMCP_CRAWLER_CRAWL_REQUEST_INTERVAL_SECONDS": "0",
                     "WEMCP_CRAWLER_PROBE_SCHEDULE": "true", "WEMCP_CRAWLER_GATEWAY_URL": gateway_url,
                     "WEMCP_CRAWLER_PROBE_INTERVAL_SECONDS": str(INTERVAL),
                     "WEMCP_CRAWLER_PROBE_TICK_SECONDS": "0.2", "WEMCP_CRAWLER_HEALTH_REPORT_SECONDS": "0"})
        async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as c:
            assert (await c.post("/api/v1/admin/crawls", json={}, headers=user)).status_code == 403
            assert (await c.get("/api/v1/admin/crawls", headers=user)).status_code == 403
            # runs other tests of this stack started are not this one
            earlier = {run["id"] for run in (await c.get("/api/v1/admin/crawls", headers=admin)).json()["items"]}
            r = await c.post("/api/v1/admin/crawls", json={"source": "registry"}, headers=admin)
            assert r.status_code == 202, r.text

            async def finished() -> dict[str, Any] | None:
                runs = (await c.get("/api/v1/admin/crawls", headers=admin)).json()["items"]
                mine = [run for run in runs if run["id"] not in earlier]
                return mine[0] if mine and mine[0]["status"] != "running" else None
            run = await wait_for(finished, 60)
            assert (run["status"], run["found"], run["new"]) == ("finished", 1, 1), run

            # the search finds the crawled server among whatever other tests of this stack published
            async def listed() -> dict[str, Any] | None:
                r = await c.post("/api/v1/servers/search", json={"query": "tide tables harbours"})
                return next((i for i in r.json()["items"] if i["name"] == "io.github.e2e/tidewatch"), None)
            item = await wait_for(listed, 60)
            assert item["hosting"] == "unhosted"
            d = (await c.get(f"/api/v1/servers/{item['slug']}")).json()
            assert d["owner_id"] is None and d["connect"]["runs"] == "unhosted"

    # health probes: a hosted server whose endpoint does not answer (kept from starting), then fixed
    async with health_reports(stack) as reported:
        port = free_port()
        slug = f"e2e-probed-{uuid.uuid4().hex[:6]}"
        # as the catalog and the deployer would say it (the route needs both)
        await publish_route(stack.infra_env()["NATS_URL"], slug, f"http://127.0.0.1:{port}/mcp",
                            name=f"io.e2e/{slug}", backend="local")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await wait_for(reported(slug, "down"), 2 * INTERVAL + 10)
        down_after = loop.time() - t0
        async with serve_upstream("both", port=port):
            t1 = loop.time()
            await wait_for(reported(slug, "up"), 2 * INTERVAL + 5)
            up_after = loop.time() - t1
        # the deployment event reaches the crawler through its consumer first (bus latency): the
        # down must show within two intervals of that, the up within two intervals of the fix
        assert down_after <= 2 * INTERVAL + 10 and up_after <= 2 * INTERVAL + 5, (down_after, up_after)
        print(json.dumps({"down_after_s": round(down_after, 2), "up_after_s": round(up_after, 2)}))


# a server that cannot start without its upstream key (as most API-backed servers): it exits at once
KEYED = stdio_server("keyed", PING, first='''import os
import sys

if not os.environ.get("PROBE_API_KEY"):
    sys.exit("PROBE_API_KEY is required")

''')


async def test_a_real_hosted_server_kept_from_starting_shows_down_then_up(stack: Stack, gateway_url: str,
                                                                        crawler_env: Any) -> None:
    """Hosted by the real deployer (a source archive in the sandbox): with no key for it the server's
    process exits at start, so the probes the crawler makes through the gateway see it down; once an
    admin gives it the platform's key, the next probe starts it and it shows up — each within two
    probe intervals."""
    admin = {"Authorization": f"Bearer {superadmin_key(stack, 'e2e-probe-admin')}"}
    _, key = await user_key(stack, "e2e-probe-owner")
    owner = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as c:
        own = (await c.get("/api/v1/names/mine", headers=owner)).json()["platform_namespace"]
        manifest = {"name": f"{own}/keyed-{uuid.uuid4().hex[:6]}", "version": "1.0.0", "runtime": "python",
                    "entrypoint": "server.py",
                    "environmentVariables": [{"name": "PROBE_API_KEY", "isSecret": True, "isRequired": True}]}
        sub = await submit_archive(c, owner, manifest, {"server.py": KEYED, "requirements.txt": "mcp==2.3.0\n"})
        slug = sub["slug"]
        await published(c, slug, owner)  # deployed: introspected with a placeholder for the key

        async with health_reports(stack) as reported:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            crawler_env({"WEMCP_CRAWLER_PROBE_SCHEDULE": "true", "WEMCP_CRAWLER_GATEWAY_URL": gateway_url,
                         "WEMCP_CRAWLER_PROBE_INTERVAL_SECONDS": str(INTERVAL),
                         "WEMCP_CRAWLER_PROBE_TICK_SECONDS": "0.2", "WEMCP_CRAWLER_HEALTH_REPORT_SECONDS": "0"})
            down = await wait_for(reported(slug, "down"), 2 * INTERVAL + 30)
            down_after = loop.time() - t0
            assert down[0]["error"], down
            # fixed: the platform's key for it, as an admin sets it
            r = await c.put("/api/v1/vault/system", headers=admin,
                            json={"server": slug, "name": "PROBE_API_KEY", "value": "pk-live-0001"})
            assert r.status_code == 200, r.text
            t1 = loop.time()
            await wait_for(reported(slug, "up"), 2 * INTERVAL + 15)
            up_after = loop.time() - t1
            assert up_after <= 2 * INTERVAL + 15, up_after
            d = (await c.get(f"/api/v1/servers/{slug}")).json()

            async def shown_up() -> bool | None:
                h = (await c.get(f"/api/v1/servers/{slug}")).json()["health"]
                return True if h and h["status"] == "up" else None
            assert await wait_for(shown_up, 10), d
            print(json.dumps({"real_hosted_down_after_s": round(down_after, 2), "up_after_s": round(up_after, 2),
                              "down_error": down[0]["error"]}))
