"""Owner edits reach the search projection through the catalog's own `server.updated` event
(re-embedding only when the embedded text changed); `mcp.call.completed` feeds the call counter and
the `popular` sort; the registry feed's version endpoints; OpenAPI documents by URL in YAML."""

from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import asynccontextmanager
from urllib.parse import quote

from sqlalchemy import func, select

from services.catalog.tests.catalog_helpers import OTHER, as_admin, as_user, publish, wait_for
from wemcp.catalog.models import SearchDoc, Server, bus_tables
from wemcp.catalog.projection import popularity_due
from wemcp.catalog.state import of
from wemcp.common.events.calls import McpCallCompleted, McpCallsCompleted
from wemcp.common.events.servers import ServerDeployed, ToolInfo
from wemcp.devstack.infra import free_port

TOOLS = [ToolInfo(name="get_forecast", description="four-day forecast", input_schema={"type": "object"})]


class CountingEmbedder:
    """Wraps the real embedder of the running catalog and counts passage embeddings."""

    def __init__(self, inner):
        self.inner, self.passage_texts = inner, []

    async def passages(self, texts):
        self.passage_texts += list(texts)
        return await self.inner.passages(texts)

    def __getattr__(self, name):
        return getattr(self.inner, name)


async def _published(infra, c, pkg: str, title: str, description: str, *, user=None) -> dict:
    r = await c.post("/api/v1/servers", headers=user or as_user(), json={
        "mcpServers": {"x": {"command": "npx", "args": ["-y", f"{pkg}@1.0.0"]}},
        "title": title, "description": description})
    assert r.status_code == 202, r.text
    acc = r.json()
    await publish(infra.nats_url, ServerDeployed(server_id=uuid.UUID(acc["id"]), slug=acc["slug"], tools=TOOLS))
    await wait_for(lambda: _searchable(c, acc["slug"]))
    return acc


async def _searchable(c, slug):
    r = await c.get(f"/api/v1/servers/{slug}")
    return r.status_code == 200 and r.json()["searchable"]


async def _slugs(c, **body) -> list[str]:
    r = await c.post("/api/v1/servers/search", json={"page_size": 20, **body})
    assert r.status_code == 200, r.text
    return [i["slug"] for i in r.json()["items"]]


async def _b(app, server_id) -> SearchDoc:
    async with app.state.runtime.sessions() as s:
        return (await s.execute(select(SearchDoc).where(SearchDoc.server_id == uuid.UUID(server_id)))).scalar_one()


async def test_owner_edits_reach_search_and_reembed_only_when_the_text_changed(catalog, infra):
    app, c = catalog
    state = of(app.state.runtime)
    counting = CountingEmbedder(state.embedder)
    state.embedder = counting
    acc = await _published(infra, c, "@edit/weather", "Amap Weather", "Real-time weather for Chinese cities.")
    slug = acc["slug"]
    assert len(counting.passage_texts) == 1  # the deployment embedded it once
    await c.put("/api/v1/categories/maps", json={"slug": "maps", "name": "地图"}, headers=as_admin())
    before = await _b(app, acc["id"])

    # tags and category are not embedded: B follows, no model call
    r = await c.patch(f"/api/v1/servers/{slug}", json={"tags": ["amap", "天气"], "category": "maps"},
                      headers=as_user())
    assert r.status_code == 200, r.text
    await wait_for(lambda: _has(c, slug, tags=["amap"], category="maps"))
    after = await _b(app, acc["id"])
    assert after.embedded_text_hash == before.embedded_text_hash
    assert len(counting.passage_texts) == 1
    assert slug in await _slugs(c, query="amap")

    # the description is embedded: re-embedded once, and the new words are searchable
    r = await c.patch(f"/api/v1/servers/{slug}", json={"description": "查询台风路径和暴雨预警。Typhoon tracks."},
                      headers=as_user())
    assert r.status_code == 200, r.text
    await wait_for(lambda: _has(c, slug, query="台风路径", mode="fulltext"))
    assert len(counting.passage_texts) == 2 and "Typhoon tracks" in counting.passage_texts[-1]
    assert (await _b(app, acc["id"])).embedded_text_hash != before.embedded_text_hash
    assert slug not in await _slugs(c, query="Chinese cities", mode="fulltext")

    # a title edit shows in the name sort key and the trigram names
    r = await c.patch(f"/api/v1/servers/{slug}", json={"title": "Typhoon Watch"}, headers=as_user())
    await wait_for(lambda: _has(c, slug, query="typhon watch", mode="trigram"))
    assert (await _b(app, acc["id"])).sort_name == "typhoon watch"

    # nothing changed, or refused: no event
    outbox = await _count_updated(app)
    assert (await c.patch(f"/api/v1/servers/{slug}", json={"title": "Typhoon Watch"},
                          headers=as_user())).status_code == 200
    assert (await c.patch(f"/api/v1/servers/{slug}", json={"title": "Mine"},
                          headers=as_user(OTHER))).status_code == 403
    r = await c.patch(f"/api/v1/servers/{slug}", json={"title": None}, headers=as_user())
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "title"
    assert await _count_updated(app) == outbox == 3

    # an edit while disabled is projected but stays out of search; enable brings it back edited
    await c.post(f"/api/v1/servers/{slug}/disable", headers=as_admin())
    await wait_for(lambda: _gone(c, slug))
    await c.patch(f"/api/v1/servers/{slug}", json={"tags": ["storm"]}, headers=as_user())
    await wait_for(lambda: _b_tags(app, acc["id"], ["storm"]))
    assert not (await _b(app, acc["id"])).enabled
    assert slug not in await _slugs(c, tags=["storm"])
    await c.post(f"/api/v1/servers/{slug}/enable", headers=as_admin())
    await wait_for(lambda: _has(c, slug, tags=["storm"]))


async def _has(c, slug, **body):
    return slug in await _slugs(c, **body)


async def _gone(c, slug):
    return slug not in await _slugs(c)


async def _b_tags(app, sid, tags):
    return (await _b(app, sid)).tags == tags


async def _count_updated(app) -> int:
    async with app.state.runtime.sessions() as s:
        return (await s.execute(select(func.count()).select_from(bus_tables.outbox)
                                .where(bus_tables.outbox.c.subject == "server.updated"))).scalar_one()


def _call(slug: str, method: str = "tools/call", status: str = "ok") -> McpCallCompleted:
    return McpCallCompleted(server_slug=slug, method=method, tool="get_forecast", status=status, latency_ms=3.0,
                            user_id=uuid.uuid4())


async def test_completed_calls_count_and_drive_the_popular_sort(catalog, infra):
    app, c = catalog
    quiet = await _published(infra, c, "@calls/quiet", "Quiet Weather", "Weather, rarely used.")
    busy = await _published(infra, c, "@calls/busy", "Busy Weather", "Weather, often used.")
    assert await _slugs(c, sort="name") == [busy["slug"], quiet["slug"]]
    events = [_call(busy["slug"]) for _ in range(12)] + [_call(quiet["slug"])]
    # not uses of the server: session set-up, listings, refused calls; unknown servers are ignored
    events += [_call(busy["slug"], "initialize"), _call(busy["slug"], "tools/list"),
               _call(quiet["slug"], status="refused"), _call("no-such-server")]
    await asyncio.gather(*(publish(infra.nats_url, e) for e in events))
    await publish(infra.nats_url, events[0])  # a redelivery of the same event counts once

    async def counts():
        d = [(await c.get(f"/api/v1/servers/{a['slug']}")).json()["calls"] for a in (busy, quiet)]
        return d if d == [12, 1] else None
    await wait_for(counts)
    assert (await _b(app, busy["id"])).popularity == 12
    assert await _slugs(c, sort="popular") == [busy["slug"], quiet["slug"]]
    assert await _slugs(c, query="weather", sort="popular") == [busy["slug"], quiet["slug"]]
    # the gateway's form: one mcp.call.batch carrying several calls
    await publish(infra.nats_url, McpCallsCompleted(calls=[_call(quiet["slug"]) for _ in range(3)]))
    await wait_for(counts_are(c, quiet["slug"], 4))
    assert (await _b(app, quiet["id"])).popularity == 4


def counts_are(c, slug, n):
    async def check():
        return (await c.get(f"/api/v1/servers/{slug}")).json()["calls"] == n
    return check


def test_popularity_follows_exactly_to_100_then_within_one_percent():
    writes, last_written = 0, 0
    for total in range(1, 200_001):
        if popularity_due(total, 1):
            writes, last_written = writes + 1, total
        assert (total <= 100 and last_written == total) or (total - last_written) <= total / 100
    assert writes < 1300  # ~100 per doubling after the first 100 (100 + 100·log2(2000)), not N
    assert popularity_due(257, 5) and not popularity_due(253, 1)  # a batch crossing a step counts


async def test_registry_versions_by_encoded_name(catalog, infra):
    _app, c = catalog
    acc = await _published(infra, c, "@reg/weather", "Weather", "Weather for the registry feed.")
    name = acc["name"]
    assert "/" in name
    r = await c.get(f"/v0.1/servers/{quote(name, safe='')}/versions")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [s["server"]["version"] for s in body["servers"]] == ["1.0.0"] and body["metadata"]["count"] == 1
    assert body["servers"][0]["_meta"]["io.modelcontextprotocol.registry/official"]["isLatest"] is True
    for version in ("1.0.0", "latest"):
        r = await c.get(f"/v0.1/servers/{quote(name, safe='')}/versions/{version}")
        assert r.status_code == 200, r.text
        assert r.json()["server"]["name"] == name and r.json()["server"]["version"] == "1.0.0"
    assert (await c.get(f"/v0.1/servers/{name}/versions")).status_code == 200  # an unencoded slash too
    assert (await c.get(f"/v0.1/servers/{quote(name, safe='')}/versions/9.9.9")).status_code == 404
    assert (await c.get("/v0.1/servers/io.x%2Fnone/versions")).status_code == 404
    # submitted but not published: not in the feed
    r = await c.post("/api/v1/servers", headers=as_user(), json={
        "server_json": {"name": "io.wemcp.acme/draft", "version": "0.1.0",
                        "packages": [{"registryType": "npm", "identifier": "@acme/draft", "version": "0.1.0"}]}})
    assert r.status_code == 202
    assert (await c.get(f"/v0.1/servers/{quote('io.wemcp.acme/draft', safe='')}/versions")).status_code == 404
    # disabled: gone from the feed
    await c.post(f"/api/v1/servers/{acc['slug']}/disable", headers=as_admin())
    assert (await c.get(f"/v0.1/servers/{quote(name, safe='')}/versions")).status_code == 404


YAML_DOC = """openapi: 3.0.3
info:
  title: Tide Tables
  version: 2024-05-01
servers:
  - url: https://tides.example.com/api
paths:
  /tides:
    get:
      operationId: getTides
      summary: 潮汐表 / tide table
components:
  securitySchemes:
    key: {type: apiKey, in: header, name: X-Tide-Key}
"""
ALIAS_BOMB = "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nopenapi: 3.0.0\n"


@asynccontextmanager
async def serving(routes: dict[str, tuple[str, bytes]]):
    """A tiny real HTTP server on loopback serving fixed documents."""
    async def handle(reader, writer):
        line = (await reader.readline()).decode()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        path = line.split(" ")[1]
        ctype, body = routes.get(path, ("text/plain", b"not found"))
        status = "200 OK" if path in routes else "404 Not Found"
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def test_openapi_by_url_accepts_yaml(catalog):
    app, c = catalog
    routes = {"/tides.yaml": ("application/yaml", YAML_DOC.encode()),
              "/bomb.yaml": ("application/yaml", ALIAS_BOMB.encode()),
              "/page.html": ("text/html", b"<html><body>not a spec</body></html>"),
              "/tides.json": ("application/json", json.dumps({"openapi": "3.1.0", "info": {
                  "title": "Tides JSON", "version": "1"}, "servers": [{"url": "https://tj.example.com"}],
                  "paths": {"/t": {"get": {"operationId": "t"}}}}).encode())}
    async with serving(routes) as base:
        r = await c.post("/api/v1/servers", json={"openapi_url": f"{base}/tides.yaml"}, headers=as_user())
        assert r.status_code == 202, r.text
        assert (await c.post("/api/v1/servers", json={"openapi_url": f"{base}/tides.json"},
                             headers=as_user())).status_code == 202
        for path, kind in (("/bomb.yaml", "yaml_alias"), ("/page.html", None), ("/missing.yaml", None)):
            r = await c.post("/api/v1/servers", json={"openapi_url": f"{base}{path}"}, headers=as_user())
            assert r.status_code == 422, (path, r.text)
            assert r.json()["errors"][0]["field"] == "openapi_url"
            if kind:
                assert r.json()["errors"][0]["type"] == kind
    async with app.state.runtime.sessions() as s:
        rows = {r.title: r for r in (await s.execute(select(Server))).scalars()}
    assert set(rows) == {"Tide Tables", "Tides JSON"}
    spec = rows["Tide Tables"].spec["openapi"]
    assert spec["baseUrl"] == "https://tides.example.com/api"
    assert spec["document"]["info"]["version"] == "2024-05-01"  # a YAML date became a string
    assert spec["inputs"][0]["isSecret"] is True
