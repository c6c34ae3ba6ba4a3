# ruff: noqa: RUF001  (Chinese punctuation in Chinese test text is intended)
"""The issue's "Must show", with real events on JetStream standing in for the deployer:
submit → server.deployed → detail shows tools → found by a Chinese query, an English query and a
misspelled name → disable → gone from search within 1 s (measured) → enable → back."""

from __future__ import annotations

import time
import uuid

from services.catalog.tests.catalog_helpers import as_admin, as_user, publish, wait_for
from wemcp.common.events.servers import (
    Endpoint,
    ServerDeployed,
    ServerDeployFailed,
    ServerDeploying,
    ToolInfo,
)

SUBMISSION = {
    "mcpServers": {"amap-weather": {"command": "npx", "args": ["-y", "@wemcp-test/amap-weather@1.2.0"],
                                    "env": {"AMAP_KEY": "secret-key-value"}}},
    "title": "高德天气 Amap Weather",
    "description": "查询中国城市的实时天气和未来天气预报，支持高德地图行政区编码。"
                   "Real-time weather and forecasts for Chinese cities via the Amap API.",
    "tags": ["weather", "天气"],
}
TOOLS = [ToolInfo(name="get_forecast", description="未来四天天气预报 / four-day forecast",
                  input_schema={"type": "object", "properties": {"city": {"type": "string"}},
                                "required": ["city"]}),
         ToolInfo(name="get_live_weather", description="实时天气 / current weather",
                  input_schema={"type": "object", "properties": {"adcode": {"type": "string"}}})]
FILLER = [  # other published servers, so ranking has something to beat
    ("@wemcp-test/github-tools", "GitHub", "Manage GitHub repositories, issues and pull requests."),
    ("@wemcp-test/pg-query", "Postgres 查询", "对 PostgreSQL 数据库执行只读 SQL 查询。Read-only SQL over PostgreSQL."),
    ("@wemcp-test/fs", "Filesystem", "Read and write files in an allowed directory."),
]


async def _search(c, query: str) -> list[str]:
    r = await c.post("/api/v1/servers/search", json={"query": query, "page_size": 10})
    assert r.status_code == 200, r.text
    return [i["slug"] for i in r.json()["items"]]


async def _deploy(infra, c, body) -> str:
    r = await c.post("/api/v1/servers", json=body, headers=as_user())
    assert r.status_code == 202, r.text
    acc = r.json()
    await publish(infra.nats_url, ServerDeployed(
        server_id=uuid.UUID(acc["id"]), slug=acc["slug"], tools=TOOLS if "amap" in acc["slug"] else [],
        endpoints=[Endpoint(url=f"http://127.0.0.1:9/mcp/{acc['slug']}")]))
    return acc["slug"]


async def test_submit_deploy_search_disable_enable(catalog, infra):
    _app, c = catalog
    for pkg, title, desc in FILLER:
        await _deploy(infra, c, {"mcpServers": {"x": {"command": "npx", "args": [f"{pkg}@1.0.0"]}},
                                 "title": title, "description": desc})
    r = await c.post("/api/v1/servers", json=SUBMISSION, headers=as_user())
    acc = r.json()
    slug = acc["slug"]
    # a deploying step, then the deployment
    await publish(infra.nats_url, ServerDeploying(server_id=uuid.UUID(acc["id"]), slug=slug, step="install"))
    await wait_for(lambda: _status(c, slug, "deploying"))
    await publish(infra.nats_url, ServerDeployed(server_id=uuid.UUID(acc["id"]), slug=slug, tools=TOOLS,
                                                 endpoints=[Endpoint(url="http://127.0.0.1:9/mcp")]))
    detail = await wait_for(lambda: _detail_if(c, slug, lambda d: d["searchable"] and d["tools"]))
    assert detail["status"] == "published"
    assert [t["name"] for t in detail["tools"]] == ["get_forecast", "get_live_weather"]
    assert detail["tools"][0]["input_schema"]["required"] == ["city"]
    assert detail["connect"]["url"].endswith(f"/mcp/{slug}")
    assert detail["connect"]["config"]["mcpServers"][slug]["url"] == detail["connect"]["url"]
    assert {"name": "AMAP_KEY", "isSecret": True, "isRequired": True} in detail["connect"]["inputs"]
    assert "secret-key-value" not in r.text + str(detail)
    await wait_for(lambda: _all_published(c, 4))

    assert (await _search(c, "天气预报"))[0] == slug          # Chinese
    assert (await _search(c, "weather forecast"))[0] == slug  # English
    assert (await _search(c, "amap wether"))[0] == slug       # misspelled name
    assert (await _search(c, "高徳天汽"))[:3].count(slug) == 1 or slug in await _search(c, "amap-weathr")

    # disable: measured from the admin's request to the first search that no longer finds it
    t0 = time.perf_counter()
    r = await c.post(f"/api/v1/servers/{slug}/disable", json={"reason": "test"}, headers=as_admin())
    assert r.status_code == 200 and r.json()["status"] == "disabled"
    await wait_for(lambda: _gone(c, "天气预报", slug), timeout=5, interval=0.01)
    gone_after = time.perf_counter() - t0
    print(f"\ndisable → gone from search: {gone_after * 1000:.0f} ms")
    assert gone_after < 1.0, f"took {gone_after:.3f} s"
    assert slug not in await _search(c, "weather forecast")
    assert (await c.get(f"/api/v1/servers/{slug}")).status_code == 404

    t0 = time.perf_counter()
    r = await c.post(f"/api/v1/servers/{slug}/enable", headers=as_admin())
    assert r.json()["status"] == "published"
    await wait_for(lambda: _found(c, "天气预报", slug), timeout=5, interval=0.01)
    print(f"enable → back in search: {(time.perf_counter() - t0) * 1000:.0f} ms")
    assert (await _search(c, "weather forecast"))[0] == slug


async def test_deploy_failed_and_stale_events(catalog, infra):
    app, c = catalog
    acc = (await c.post("/api/v1/servers", json=SUBMISSION, headers=as_user())).json()
    sid, slug = uuid.UUID(acc["id"]), acc["slug"]
    await publish(infra.nats_url, ServerDeployFailed(server_id=sid, slug=slug, reason="npm install failed"))
    d = await wait_for(lambda: _detail_if(c, slug, lambda d: d["status"] == "failed", as_user()))
    assert d["status_detail"] == "npm install failed" and not d["searchable"]
    deployed = ServerDeployed(server_id=sid, slug=slug, tools=TOOLS)
    await publish(infra.nats_url, deployed)
    await wait_for(lambda: _status(c, slug, "published"))
    # an older "deploying" arriving late does not roll the status back
    old = ServerDeploying(server_id=sid, slug=slug, step="install", occurred_at=deployed.occurred_at.replace(
        year=deployed.occurred_at.year - 1))
    await publish(infra.nats_url, old)
    marker = ServerDeploying(server_id=uuid.uuid4(), slug="unknown", step="x")  # unknown server: ignored
    await publish(infra.nats_url, marker)
    await wait_for(lambda: _processed(app, marker.event_id))
    await wait_for(lambda: _processed(app, old.event_id))
    assert (await c.get(f"/api/v1/servers/{slug}")).json()["status"] == "published"


async def _processed(app, event_id) -> bool:
    from sqlalchemy import select

    from wemcp.catalog.models import bus_tables
    async with app.state.runtime.sessions() as s:
        return (await s.execute(select(bus_tables.processed.c.event_id).where(
            bus_tables.processed.c.event_id == event_id))).first() is not None


async def _detail_if(c, slug, pred, headers=None):
    r = await c.get(f"/api/v1/servers/{slug}", headers=headers or {})
    return r.json() if r.status_code == 200 and pred(r.json()) else None


async def _status(c, slug, status):
    r = await c.get(f"/api/v1/servers/{slug}", headers=as_user())
    return r.status_code == 200 and r.json()["status"] == status


async def _all_published(c, n):
    r = await c.post("/api/v1/servers/search", json={})
    return r.json()["total"] == n


async def _gone(c, q, slug):
    return slug not in await _search(c, q)


async def _found(c, q, slug):
    return slug in await _search(c, q)
