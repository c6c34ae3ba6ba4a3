"""Unpinned submissions resolve to the latest release (loopback stand-ins of the npm registry and
PyPI's JSON API; one test against the real registries), and ``"transport": "stdio-local"``."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from sqlalchemy import func, select

from services.catalog.tests.catalog_helpers import as_user, publish, stand_in_registries, wait_for
from wemcp.catalog.models import Server, bus_tables
from wemcp.catalog.resolve import Resolver
from wemcp.common.errors import ServiceUnavailable, Unprocessable
from wemcp.common.events.servers import ServerDeployed, ToolInfo
from wemcp.common.netpolicy import EgressPolicy

BAIDU = {"mcpServers": {"baidu-map": {"command": "npx", "args": ["-y", "@baidumap/mcp-server-baidu-map"],
                                      "env": {"BAIDU_MAP_API_KEY": "xxx"}}}}


async def _rows(app) -> list[Server]:
    async with app.state.runtime.sessions() as s:
        return list((await s.execute(select(Server).order_by(Server.created_at))).scalars())


async def _events(app) -> int:
    async with app.state.runtime.sessions() as s:
        return (await s.execute(select(func.count()).select_from(bus_tables.outbox))).scalar_one()


async def test_the_seed_example_is_accepted_as_pasted_and_pinned_to_the_latest_release(catalog, registries):
    app, c = catalog
    r = await c.post("/api/v1/servers", json=BAIDU, headers=as_user())
    assert r.status_code == 202, r.text
    assert r.json()["version"] == "1.0.5"
    (row,) = await _rows(app)
    pkg = row.spec["packages"][0]
    assert (pkg["identifier"], pkg["version"]) == ("@baidumap/mcp-server-baidu-map", "1.0.5")
    assert row.spec["version"] == "1.0.5"
    assert row.spec["resolved"][0]["requested"] == "latest" and row.spec["resolved"][0]["version"] == "1.0.5"
    # the registry was asked for the scoped name as npm escapes it
    assert registries.hits == ["npm:/npm/@baidumap%2Fmcp-server-baidu-map/latest"]
    # the exact version reaches the deployer in server.submitted, and the owner's detail shows it
    async with app.state.runtime.sessions() as s:
        payload = json.loads((await s.execute(select(bus_tables.outbox.c.payload))).scalar_one())
    assert payload["spec"]["packages"][0]["version"] == "1.0.5" and payload["version"] == "1.0.5"
    d = (await c.get(f"/api/v1/servers/{row.slug}", headers=as_user())).json()
    assert d["version"] == "1.0.5" and d["spec"]["packages"][0]["version"] == "1.0.5"
    assert "xxx" not in json.dumps(row.spec)  # the key-looking variable's value is never kept


async def test_uvx_latest_tags_and_server_json_without_versions_resolve(catalog):
    app, c = catalog
    r = await c.post("/api/v1/servers", json={"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"]}}},
                     headers=as_user())
    assert r.status_code == 202, r.text
    # a name the submitter did not give goes into their own namespace
    assert r.json()["version"] == "2026.10.19" and r.json()["name"] == "io.wemcp.acme/mcp-server-time"
    r = await c.post("/api/v1/servers", json={"mcpServers": {"w": {
        "command": "npx", "args": ["-y", "@acme/weather-mcp@latest"]}}}, headers=as_user())
    assert r.status_code == 202 and r.json()["version"] == "1.4.0", r.text
    sj = {"$schema": "https://static.modelcontextprotocol.io/schemas/2025-09-29/server.schema.json",
          "name": "io.wemcp.acme/maps", "description": "Maps",
          "packages": [{"registryType": "pypi", "identifier": "Acme_Maps.MCP"}]}
    r = await c.post("/api/v1/servers", json=sj, headers=as_user())
    assert r.status_code == 202 and r.json()["version"] == "2.1.0", r.text  # name canonicalised for the lookup
    rows = {row.name: row for row in await _rows(app)}
    assert rows["io.wemcp.acme/maps"].spec["packages"][0]["version"] == "2.1.0"
    # a pinned submission asks nobody
    r = await c.post("/api/v1/servers", json={"mcpServers": {"t2": {"command": "uvx", "args": ["other-pkg==0.1.0"]}}},
                     headers=as_user())
    assert r.status_code == 202 and r.json()["version"] == "0.1.0"


async def test_a_package_that_does_not_exist_is_a_422_naming_it(catalog, registries):
    app, c = catalog
    for body, field, name in [
        ({"mcpServers": {"w": {"command": "npx", "args": ["-y", "@nobody/no-such-mcp"]}}}, "mcp_servers.w.args",
         "@nobody/no-such-mcp"),
        ({"mcpServers": {"p": {"command": "uvx", "args": ["no-such-mcp-server"]}}}, "mcp_servers.p.args",
         "no-such-mcp-server"),
        ({"name": "io.x/y", "packages": [{"registryType": "npm", "identifier": "ghost-pkg"}]},
         "server_json.packages.0.version", "ghost-pkg"),
    ]:
        r = await c.post("/api/v1/servers", json=body, headers=as_user())
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        problem = r.json()
        assert name in problem["detail"] and "does not exist" in problem["detail"]
        assert problem["errors"][0]["field"] == field and problem["errors"][0]["type"] == "package_not_found"
    # names no registry accepts are refused without asking one
    asked = len(registries.hits)
    for ident in ("Upper/Case", "a..b/", "-dash", "x" * 215):
        r = await c.post("/api/v1/servers", json={"name": "io.x/y", "packages": [
            {"registryType": "npm", "identifier": ident}]}, headers=as_user())
        assert r.status_code == 422 and r.json()["errors"][0]["type"] in ("invalid_package_name", "string_too_long",
                                                                          "string_pattern_mismatch"), r.text
    assert len(registries.hits) == asked
    assert await _rows(app) == [] and await _events(app) == 0


async def test_a_registry_that_cannot_answer_is_a_503_not_a_500(catalog, registries):
    app, c = catalog
    registries.down = True
    r = await c.post("/api/v1/servers", json=BAIDU, headers=as_user())
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json") and r.headers["retry-after"] == "30"
    assert "HTTP 502" in r.json()["detail"]
    assert await _rows(app) == []


async def test_an_unreachable_registry_is_a_503():
    from wemcp.devstack.infra import free_port

    port = free_port()  # nothing listens there
    resolver = Resolver(EgressPolicy("127.0.0.1"), npm_registry=f"http://127.0.0.1:{port}",
                        pypi_url=f"http://127.0.0.1:{port}")
    with pytest.raises(ServiceUnavailable) as err:
        await resolver.latest("pypi", "mcp-server-time", "mcp_servers.t.args")
    assert "cannot be reached" in err.value.detail and "mcp-server-time" in err.value.detail
    # and the egress policy applies: a registry on an address it refuses is not asked
    resolver = Resolver(EgressPolicy(""), npm_registry=f"http://127.0.0.1:{port}", pypi_url=f"http://127.0.0.1:{port}")
    with pytest.raises(ServiceUnavailable):
        await resolver.latest("npm", "left-pad", "x")


async def test_resubmitting_picks_up_a_newer_release_as_a_new_version(catalog, registries):
    app, c = catalog
    first = await c.post("/api/v1/servers", json=BAIDU, headers=as_user())
    assert first.json()["version"] == "1.0.5"
    again = await c.post("/api/v1/servers", json=BAIDU, headers=as_user())
    assert again.json()["duplicate"] and await _events(app) == 1  # same release: idempotent
    registries.latest["npm:@baidumap/mcp-server-baidu-map"] = "1.1.0"
    newer = await c.post("/api/v1/servers", json=BAIDU, headers=as_user())
    assert newer.status_code == 202 and newer.json()["version"] == "1.1.0" and not newer.json()["duplicate"]
    assert newer.json()["id"] == first.json()["id"]
    (row,) = await _rows(app)
    assert row.spec["packages"][0]["version"] == "1.1.0" and await _events(app) == 2


async def test_answers_are_cached_for_the_ttl_and_the_cache_is_bounded(monkeypatch):
    from wemcp.catalog import resolve

    now = [0.0]
    async with stand_in_registries(**{"npm:a": "1.0.0", "npm:b": "2.0.0", "npm:c": "3.0.0"}) as reg:
        r = Resolver(EgressPolicy("127.0.0.1"), npm_registry=reg.npm_url, pypi_url=reg.pypi_url, ttl=60,
                     clock=lambda: now[0])
        assert await r.latest("npm", "a", "x") == "1.0.0"
        reg.latest["npm:a"] = "1.1.0"
        assert await r.latest("npm", "a", "x") == "1.0.0" and r.lookups == 1  # cached
        now[0] = 61.0
        assert await r.latest("npm", "a", "x") == "1.1.0" and r.lookups == 2  # expired: asked again
        monkeypatch.setattr(resolve, "MAX_CACHED", 2)
        await r.latest("npm", "b", "x")
        await r.latest("npm", "c", "x")
        assert len(r._cache) == 2 and ("npm", "a") not in r._cache  # the oldest went first
        with pytest.raises(Unprocessable):  # not-found answers are not cached as versions
            await r.latest("npm", "zzz", "x")
        assert ("npm", "zzz") not in r._cache


async def test_the_real_registries_resolve_server_everything_and_mcp_server_time():
    """The machine's own registries (pip/npm configuration), through the egress policy."""
    r = Resolver(EgressPolicy(""))
    npm = await r.latest("npm", "@modelcontextprotocol/server-everything", "x")
    pypi = await r.latest("pypi", "mcp-server-time", "x")
    for v in (npm, pypi):
        assert re.fullmatch(r"\d+\.\d+\.\d+", v), v
    with pytest.raises(Unprocessable):
        await r.latest("npm", "@wemcp-test-nobody/surely-not-published-4f1c", "x")


async def test_stdio_local_lists_tools_and_gives_the_config_to_run_it(catalog, infra):
    app, c = catalog
    body = {"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time", "--local-timezone", "UTC"],
                                    "env": {"TIME_API_KEY": "sk-hidden-1", "UNITS": "metric"}}},
            "transport": "stdio-local"}
    r = await c.post("/api/v1/servers", json=body, headers=as_user())
    assert r.status_code == 202, r.text
    acc = r.json()
    (row,) = await _rows(app)
    assert row.spec["hosting"] == "local" and row.package_key == "local:pypi:mcp-server-time"
    # the same package hosted is another listing, not a takeover of this one
    hosted = await c.post("/api/v1/servers", json={"mcpServers": body["mcpServers"]}, headers=as_user())
    assert hosted.status_code == 202 and hosted.json()["id"] != acc["id"]
    # the deployer lists it once (no endpoints) and the page shows its tools and how to run it
    await publish(infra.nats_url, ServerDeployed(
        server_id=uuid.UUID(acc["id"]), slug=acc["slug"], endpoints=[], backend="unhosted",
        package_version="2026.10.19", tools=[ToolInfo(name="get_current_time", input_schema={"type": "object"})]))

    async def published():
        d = (await c.get(f"/api/v1/servers/{acc['slug']}")).json()
        return d if d.get("status") == "published" else None

    d = await wait_for(published)
    assert [t["name"] for t in d["tools"]] == ["get_current_time"]
    connect = d["connect"]
    assert connect["runs"] == "local" and connect["url"] is None and connect["transport"] == "stdio"
    entry = connect["config"]["mcpServers"][acc["slug"]]
    assert entry["command"] == "uvx"
    assert entry["args"] == ["mcp-server-time==2026.10.19", "--local-timezone", "UTC"]
    assert entry["env"] == {"TIME_API_KEY": "<TIME_API_KEY>", "UNITS": "metric"}
    assert "sk-hidden-1" not in json.dumps(d)
    # npm: npx -y with the exact version
    r = await c.post("/api/v1/servers", json={**BAIDU, "transport": "stdio-local"}, headers=as_user())
    assert r.status_code == 202
    d = (await c.get(f"/api/v1/servers/{r.json()['slug']}", headers=as_user())).json()
    assert d["connect"]["config"]["mcpServers"][r.json()["slug"]]["args"] == \
        ["-y", "@baidumap/mcp-server-baidu-map@1.0.5"]


async def test_stdio_local_needs_a_package(catalog):
    app, c = catalog
    for body in ({"mcpServers": {"r": {"url": "https://docs.example.com/mcp"}}, "transport": "stdio-local"},
                 {"openapi": {"openapi": "3.0.0", "info": {"title": "x", "version": "1"},
                              "servers": [{"url": "https://x.example.com"}], "paths": {"/a": {"get": {}}}},
                  "transport": "stdio-local"}):
        r = await c.post("/api/v1/servers", json=body, headers=as_user())
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "transport", r.text
    r = await c.post("/api/v1/servers", json={**BAIDU, "transport": "on-the-moon"}, headers=as_user())
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "transport"
    assert await _rows(app) == []
