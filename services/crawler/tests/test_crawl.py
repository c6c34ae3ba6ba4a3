"""Discovery crawls against loopback stand-ins of the official MCP registry, npm's search API and
PyPI's JSON API (wemcp.testkit.registries), with the crawler and the catalog running in-process on the real
Postgres and JetStream: a crawled server becomes an owner-less, unhosted listing that search finds;
runs are recorded, incremental, deduplicated and resumable; an owned listing is never overwritten."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx2 as httpx
import pytest_asyncio

from wemcp.catalog.config import Settings as CatalogSettings
from wemcp.catalog.main import SPEC as CATALOG
from wemcp.common.identity import Identity
from wemcp.common.service import running
from wemcp.common.trust import platform_headers
from wemcp.crawler.config import Settings
from wemcp.crawler.main import SPEC
from wemcp.devstack.testing import metric_points, metric_reader, wait_for
from wemcp.testkit.registries import Registries, npm_package, pypi_info, registry_entry, stand_ins

ADMIN = Identity(uuid.UUID(int=99), "admin")  # type: ignore[arg-type]
USER = Identity(uuid.UUID(int=1), "user")  # type: ignore[arg-type]


def as_(who: Identity, service: str = "crawler") -> dict[str, str]:
    return platform_headers(service, who, issuer="gateway")


class Stack:
    def __init__(self, reg: Registries, crawler: httpx.AsyncClient, catalog: httpx.AsyncClient) -> None:
        self.reg, self.crawler, self.catalog = reg, crawler, catalog

    async def crawl(self, source: str | None = None) -> list[dict[str, Any]]:
        """Start a run as an admin and wait until no run is left running; the runs, newest first."""
        before = {x["id"] for x in (await self.crawler.get("/api/v1/admin/crawls?page_size=100",
                                                          headers=as_(ADMIN))).json()["items"]}
        r = await self.crawler.post("/api/v1/admin/crawls", json={"source": source}, headers=as_(ADMIN))
        assert r.status_code == 202, r.text
        wanted = set(r.json()["started"])

        async def done() -> list[dict[str, Any]] | None:
            runs = (await self.crawler.get("/api/v1/admin/crawls?page_size=100", headers=as_(ADMIN))).json()["items"]
            fresh = [x for x in runs if x["id"] not in before]
            if {x["source"] for x in fresh} == wanted and all(x["status"] != "running" for x in fresh):
                return fresh
            return None
        return await wait_for(done, 20)

    async def search(self, query: str) -> list[dict[str, Any]]:
        r = await self.catalog.post("/api/v1/servers/search", json={"query": query, "mode": "text"})
        assert r.status_code == 200, r.text
        return r.json()["items"]

    async def detail(self, slug: str) -> dict[str, Any]:
        r = await self.catalog.get(f"/api/v1/servers/{slug}")
        assert r.status_code == 200, r.text
        return r.json()


@pytest_asyncio.fixture
async def stack(settings_for: Any, clean_db: None, clean_bus: None) -> AsyncIterator[Stack]:
    async with AsyncExitStack() as es:
        reg = await es.enter_async_context(stand_ins())
        crawler_settings = settings_for(
            Settings, egress_allow="127.0.0.1", registry_url=reg.base, npm_search_url=reg.base, pypi_url=reg.base,
            npm_queries=["keywords:mcp-server"], pypi_packages=["acme-maps-mcp", "no-such-project"],
            crawl_page_size=2, crawl_request_interval_seconds=0, crawl_retries=1)
        crawler_app = await es.enter_async_context(running(SPEC, crawler_settings))
        catalog_app = await es.enter_async_context(running(CATALOG, settings_for(
            CatalogSettings, embedder="hash", max_submissions_per_hour=10_000, max_deployments_in_flight=10_000)))
        crawler = await es.enter_async_context(httpx.AsyncClient(
            transport=httpx.ASGITransport(app=crawler_app), base_url="http://crawler"))
        catalog = await es.enter_async_context(httpx.AsyncClient(
            transport=httpx.ASGITransport(app=catalog_app), base_url="http://catalog"))
        yield Stack(reg, crawler, catalog)


def fill(reg: Registries) -> None:
    reg.registry = [
        registry_entry("io.github.acme/weather", "1.2.0", npm="@acme/weather-mcp", description="Weather forecasts"),
        registry_entry("io.github.acme/tides", "0.3.0", pypi="acme-tides-mcp", description="Tide tables"),
        registry_entry("io.github.acme/gone", "1.0.0", npm="@acme/gone-mcp", status="deleted"),
        registry_entry("io.github.acme/quakes", "2.0.0", remote="https://quakes.example.com/mcp",
                       description="Earthquake alerts"),
    ]
    reg.npm["keywords:mcp-server"] = [npm_package("@acme/weather-mcp", "1.2.0", "Another weather description"),
                                      npm_package("lighthouse-mcp", "0.9.1", "Lighthouse audits for pages")]
    reg.pypi = {"acme-maps-mcp": pypi_info("acme-maps-mcp", "2.1.0", "Maps and routing"),
                "acme-tides-mcp": pypi_info("acme-tides-mcp", "0.3.0", "Tides from PyPI")}


def _counts(reader: Any, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    return {tuple(p.attributes[k] for k in keys): (p.value if hasattr(p, "value") else p.count)
            for p in metric_points(reader).get(name, [])}


async def test_crawled_servers_become_unhosted_listings_and_runs_are_recorded(stack: Stack) -> None:
    reader = metric_reader()
    runs_before = _counts(reader, "wemcp.crawler.runs", "source", "outcome")
    found_before = _counts(reader, "wemcp.crawler.servers", "source", "kind")
    fill(stack.reg)
    runs = await stack.crawl()
    by = {r["source"]: r for r in runs}
    assert {r["status"] for r in runs} == {"finished"}, runs
    # registry: 3 usable entries over 2 pages (page size 2); the deleted one is skipped
    assert (by["registry"]["found"], by["registry"]["new"], by["registry"]["pages"]) == (3, 3, 2)
    # npm: the weather package the registry described is found but not re-described
    assert (by["npm"]["found"], by["npm"]["new"]) == (2, 1)
    # pypi: the configured names plus the one a registry entry names; one of them does not exist
    assert (by["pypi"]["found"], by["pypi"]["new"], by["pypi"]["errors"]) == (2, 1, 1)
    assert any("no-such-project" in e for e in by["pypi"]["error_detail"])
    assert "/pypi/acme-tides-mcp/json" in stack.reg.hits
    # the same runs as metrics (wemcp.crawler.runs / .servers / .run.duration: the dashboard's panel)
    ran = _counts(reader, "wemcp.crawler.runs", "source", "outcome")
    for source in ("registry", "npm", "pypi"):
        assert ran[(source, "finished")] == runs_before.get((source, "finished"), 0) + 1, source
    found = _counts(reader, "wemcp.crawler.servers", "source", "kind")
    assert found[("registry", "new")] - found_before.get(("registry", "new"), 0) == 3
    assert found[("npm", "new")] - found_before.get(("npm", "new"), 0) == 1
    timed = _counts(reader, "wemcp.crawler.run.duration", "source", "outcome")
    assert timed[("registry", "finished")] >= 1

    items = await wait_for(lambda: _found(stack, "lighthouse"), 15)
    assert items[0]["hosting"] == "unhosted"
    weather = (await wait_for(lambda: _found(stack, "weather"), 15))[0]
    d = await stack.detail(weather["slug"])
    assert d["owner_id"] is None and d["hosting"] == "unhosted" and d["status"] == "published"
    assert d["description"] == "Weather forecasts"  # the registry's description, not npm's
    assert d["connect"]["runs"] == "unhosted" and d["connect"]["url"] is None
    assert d["connect"]["config"]["mcpServers"][weather["slug"]]["args"][:2] == ["-y", "@acme/weather-mcp@1.2.0"]
    assert d["inputs"][0]["name"] == "API_KEY" and d["inputs"][0]["isSecret"]
    quakes = (await wait_for(lambda: _found(stack, "earthquake"), 15))[0]
    assert (await stack.detail(quakes["slug"]))["connect"]["url"] == "https://quakes.example.com/mcp"
    assert await wait_for(lambda: _found(stack, "maps routing"), 15)
    assert not await stack.search("gone")

    # the next run is incremental: the registry is asked only for what changed since, nothing is re-emitted
    stack.reg.hits.clear()
    stack.reg.registry[0] = registry_entry("io.github.acme/weather", "1.3.0", npm="@acme/weather-mcp",
                                           description="Weather forecasts, now hourly",
                                           updated="2099-01-01T00:00:00Z")
    runs = await stack.crawl("registry")
    latest = runs[0]
    assert latest["since"] is not None and any("updated_since=" in h for h in stack.reg.hits)
    assert (latest["found"], latest["new"], latest["updated"]) == (1, 0, 1)

    async def updated() -> bool:
        return (await stack.detail(weather["slug"]))["version"] == "1.3.0"
    assert await wait_for(updated, 15)
    runs = await stack.crawl("npm")
    assert (runs[0]["found"], runs[0]["new"], runs[0]["updated"]) == (2, 0, 0)


async def _found(stack: Stack, query: str) -> list[dict[str, Any]] | None:
    return await stack.search(query) or None


async def test_an_interrupted_crawl_resumes_where_it_stopped(stack: Stack) -> None:
    fill(stack.reg)
    stack.reg.fail_cursor = True  # the registry answers 503 from its second page on
    runs = await stack.crawl("registry")
    first = runs[0]
    assert first["status"] == "failed" and first["found"] == 1 and first["pages"] == 1, first  # gone, quakes
    assert any("503" in e for e in first["error_detail"])

    stack.reg.fail_cursor = False
    stack.reg.hits.clear()
    runs = await stack.crawl("registry")
    second = runs[0]
    assert second["status"] == "finished" and second["resumed_from"] == first["id"]
    assert second["found"] == 2 and second["new"] == 2  # only what the first run had not reached: tides, weather
    assert "cursor=" in stack.reg.hits[0]  # it went on from the stored position


async def test_an_owned_listing_is_never_overwritten(stack: Stack) -> None:
    # as pasted (no name): the owner's own namespace io.wemcp.<handle>/…, which needs no proof from auth
    sub = {"mcp_servers": {"weather": {"command": "npx", "args": ["-y", "@acme/weather-mcp@1.0.0"]}},
           "description": "Mine"}
    r = await stack.catalog.post("/api/v1/servers", json=sub, headers=as_(USER, "catalog"))
    assert r.status_code == 202, r.text
    slug = r.json()["slug"]
    fill(stack.reg)
    await stack.crawl("registry")
    assert await wait_for(lambda: _found(stack, "earthquake"), 15)  # the crawl's events were consumed
    r = await stack.catalog.get(f"/api/v1/servers/{slug}", headers=as_(USER, "catalog"))
    d = r.json()
    assert (d["version"], d["description"], d["owner_id"], d["hosting"]) == ("1.0.0", "Mine", str(USER.user_id),
                                                                            "hosted")
    assert not await stack.search("forecasts")  # no second listing of the same package either


@pytest_asyncio.fixture
async def crawler_only(settings_for: Any, clean_db: None) -> AsyncIterator[httpx.AsyncClient]:
    async with running(SPEC, settings_for(Settings)) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://crawler") as c:
            yield c


async def test_crawl_routes_are_for_admins_only(crawler_only: httpx.AsyncClient) -> None:
    c = crawler_only
    assert (await c.get("/api/v1/admin/crawls")).status_code == 401
    assert (await c.get("/api/v1/admin/crawls", headers=as_(USER))).status_code == 403
    assert (await c.post("/api/v1/admin/crawls", json={}, headers=as_(USER))).status_code == 403
    assert (await c.post("/api/v1/admin/crawls", json={})).status_code == 401
    r = await c.post("/api/v1/admin/crawls", json={"source": "github"}, headers=as_(ADMIN))
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    r = await c.get("/api/v1/admin/crawls?page_size=1000", headers=as_(ADMIN))
    assert r.status_code == 422
    r = await c.get("/api/v1/admin/crawls", headers={"X-WeMcp-User-Id": str(ADMIN.user_id),
                                                      "X-WeMcp-User-Role": "admin"})
    assert r.status_code == 401  # bare identity headers are not a credential
    assert (await c.get("/api/v1/admin/crawls", headers=as_(ADMIN))).json()["items"] == []


def test_the_gateway_routes_admin_crawls_to_the_crawler() -> None:
    from wemcp.gateway.routing import owner_of

    assert owner_of("admin/crawls") == "crawler"
    assert owner_of("admin/crawls/x") == "crawler"
    assert owner_of("admin/other") is None
