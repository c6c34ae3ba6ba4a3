"""server.health from the crawler's probes: the detail shows status, last check, uptime 24 h / 7 d
and p50/p95 latency; search filters to healthy servers; an older check never replaces a newer one;
tools that changed replace the deployment's introspection and are searchable."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from services.catalog.tests.catalog_helpers import as_user, publish, wait_for
from wemcp.common.events.servers import Endpoint, ServerDeployed, ServerHealth, ToolInfo


async def _deployed(infra: Any, c: Any, pkg: str, title: str) -> tuple[uuid.UUID, str]:
    r = await c.post("/api/v1/servers", json={"mcpServers": {"x": {"command": "npx", "args": [f"{pkg}@1.0.0"]}},
                                              "title": title, "description": f"{title} for tests"},
                     headers=as_user())
    assert r.status_code == 202, r.text
    sid, slug = uuid.UUID(r.json()["id"]), r.json()["slug"]
    await publish(infra.nats_url, ServerDeployed(server_id=sid, slug=slug, endpoints=[Endpoint(url="http://x/mcp")],
                                                 tools=[ToolInfo(name="old_tool", description="the first tool")]))
    return sid, slug


async def _detail(c: Any, slug: str, pred: Any) -> dict[str, Any] | None:
    d = (await c.get(f"/api/v1/servers/{slug}")).json()
    return d if pred(d) else None


async def _healthy(c: Any, query: str) -> list[str]:
    r = await c.post("/api/v1/servers/search", json={"query": query, "healthy": True, "mode": "text"})
    assert r.status_code == 200, r.text
    return [i["slug"] for i in r.json()["items"]]


async def test_health_reaches_detail_and_search(catalog: Any, infra: Any) -> None:
    _app, c = catalog
    a_id, a = await _deployed(infra, c, "@acme/compass-mcp", "Compass bearings")
    b_id, b = await _deployed(infra, c, "@acme/sextant-mcp", "Sextant bearings")
    await wait_for(lambda: _detail(c, b, lambda d: d.get("searchable")))
    assert (await c.get(f"/api/v1/servers/{a}")).json()["health"] is None  # not probed yet
    now = datetime.now(UTC)
    await publish(infra.nats_url, ServerHealth(
        server_id=a_id, slug=a, status="up", checked_at=now, latency_ms=41.5, uptime_24h=0.99, uptime_7d=0.95,
        p50_ms=40.0, p95_ms=88.0, tool_count=1,
        tools=[ToolInfo(name="true_north", description="points at true north")]))
    await publish(infra.nats_url, ServerHealth(server_id=b_id, slug=b, status="down", checked_at=now,
                                               error="initialize: HTTP 502", uptime_24h=0.5))
    d = await wait_for(lambda: _detail(c, a, lambda d: d.get("health") is not None))
    h = d["health"]
    assert (h["status"], h["uptime_24h"], h["uptime_7d"], h["p50_ms"], h["p95_ms"]) == ("up", 0.99, 0.95, 40.0, 88.0)
    assert h["checked_at"].startswith(now.isoformat()[:19])
    assert [t["name"] for t in d["tools"]] == ["true_north"]  # re-introspected by the probe
    await wait_for(lambda: _detail(c, b, lambda d: d.get("health") is not None))
    r = await c.post("/api/v1/servers/search", json={"query": "bearings", "mode": "text"})
    assert {i["slug"]: i["health"] for i in r.json()["items"]} == {a: "up", b: "down"}
    assert await _healthy(c, "bearings") == [a]
    assert await _healthy(c, "true north") == [a]  # the new tools are searchable

    # an older check arriving late changes nothing; a newer one does
    await publish(infra.nats_url, ServerHealth(server_id=a_id, slug=a, status="down",
                                               checked_at=now - timedelta(minutes=5)))
    await publish(infra.nats_url, ServerHealth(server_id=b_id, slug=b, status="idle",
                                               checked_at=now + timedelta(minutes=5)))
    await wait_for(lambda: _detail(c, b, lambda d: d["health"]["status"] == "idle"))
    assert (await c.get(f"/api/v1/servers/{a}")).json()["health"]["status"] == "up"
    assert sorted(await _healthy(c, "bearings")) == sorted([a, b])  # idle after a good probe counts


async def test_bad_healthy_filter_is_a_422(catalog: Any) -> None:
    _app, c = catalog
    r = await c.post("/api/v1/servers/search", json={"query": "x", "healthy": "very"})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
