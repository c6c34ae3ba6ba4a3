"""Submissions: every accepted source, idempotency, ownership, and bad input refused cleanly."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from services.catalog.tests.catalog_helpers import ADMIN, OTHER, as_admin, as_user, npm_submission
from wemcp.catalog.models import Server, bus_tables


async def _count(app, table) -> int:
    async with app.state.runtime.sessions() as s:
        return (await s.execute(select(func.count()).select_from(table))).scalar_one()


async def test_mcpservers_submission_is_normalised_stored_and_emitted(catalog):
    app, c = catalog
    r = await c.post("/api/v1/servers", json=npm_submission(), headers=as_user())
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "submitted" and body["slug"] == "acme-weather-mcp" and not body["duplicate"]
    async with app.state.runtime.sessions() as s:
        row = (await s.execute(select(Server))).scalar_one()
        events = (await s.execute(select(bus_tables.outbox.c.subject, bus_tables.outbox.c.payload))).all()
    pkg = row.spec["packages"][0]
    assert (pkg["registryType"], pkg["identifier"], pkg["version"]) == ("npm", "@acme/weather-mcp", "1.0.0")
    env = {e["name"]: e for e in pkg["environmentVariables"]}
    assert env["WEATHER_API_KEY"]["isSecret"] and "default" not in env["WEATHER_API_KEY"]
    assert env["UNITS"]["default"] == "metric"
    assert row.icon == "https://api.dicebear.com/7.x/bottts/svg?seed=acme-weather-mcp"
    assert [e[0] for e in events] == ["server.submitted"]
    # the secret value never reaches the database or the bus
    assert "sk-live-secret-123" not in json.dumps(row.spec) and "sk-live-secret-123" not in events[0][1]


async def test_same_package_and_version_is_idempotent(catalog):
    app, c = catalog
    first = (await c.post("/api/v1/servers", json=npm_submission(), headers=as_user())).json()
    again = await c.post("/api/v1/servers", json=npm_submission(), headers=as_user())
    assert again.status_code == 202 and again.json()["id"] == first["id"] and again.json()["duplicate"]
    assert await _count(app, Server) == 1 and await _count(app, bus_tables.outbox) == 1
    # someone else cannot take the listing over
    r = await c.post("/api/v1/servers", json=npm_submission(), headers=as_user(OTHER))
    assert r.status_code == 409
    # the owner's new version resubmits the same row
    r = await c.post("/api/v1/servers", json=npm_submission(version="1.1.0"), headers=as_user())
    assert r.status_code == 202 and r.json()["id"] == first["id"] and r.json()["version"] == "1.1.0"
    assert await _count(app, Server) == 1 and await _count(app, bus_tables.outbox) == 2


async def test_server_json_remote_and_openapi_sources(catalog):
    app, c = catalog
    sj = {"$schema": "https://static.modelcontextprotocol.io/schemas/2025-09-29/server.schema.json",
          "name": "io.wemcp.acme/maps", "description": "Maps and routes", "version": "2.0.0",
          "packages": [{"registryType": "pypi", "identifier": "acme-maps-mcp", "version": "2.0.0",
                        "environmentVariables": [{"name": "MAPS_KEY", "isSecret": True, "isRequired": True,
                                                  "default": "leak"}]}]}
    r = await c.post("/api/v1/servers", json=sj, headers=as_user())
    assert r.status_code == 202, r.text
    assert r.json()["name"] == "io.wemcp.acme/maps" and r.json()["slug"] == "maps"
    r = await c.post("/api/v1/servers", json={"mcpServers": {"remote-docs": {
        "type": "sse", "url": "https://docs.example.com/sse", "headers": {"Authorization": "Bearer abc"}}}},
        headers=as_user())
    assert r.status_code == 202, r.text
    doc = {"openapi": "3.1.0", "info": {"title": "Pet Store", "version": "1.0.3"},
           "servers": [{"url": "https://pets.example.com/v1"}],
           "paths": {"/pets": {"get": {"operationId": "listPets"}}},
           "components": {"securitySchemes": {"key": {"type": "apiKey", "in": "header", "name": "X-Key"}}}}
    r = await c.post("/api/v1/servers", json=doc, headers=as_user())
    assert r.status_code == 202, r.text
    async with app.state.runtime.sessions() as s:
        rows = {r.source_kind: r for r in (await s.execute(select(Server))).scalars()}
    assert set(rows) == {"server.json", "mcpServers", "openapi"}
    assert "leak" not in json.dumps(rows["server.json"].spec)
    assert rows["mcpServers"].spec["remotes"][0]["type"] == "sse"
    assert rows["openapi"].spec["openapi"]["baseUrl"] == "https://pets.example.com/v1"
    assert rows["openapi"].spec["openapi"]["inputs"][0]["isSecret"] is True


BAD = [
    ({"mcpServers": {"x": {"command": "node", "args": ["/opt/server.js"]}}}, "mcp_servers.x.command"),
    ({"server_json": {"name": "io.x/y", "version": "1.0.0",
                      "packages": [{"registryType": "cargo", "identifier": "y"}]}},
     "server_json.packages.0.registryType"),
    ({"server_json": {"name": "no slash", "version": "1.0.0",
                      "packages": [{"registryType": "npm", "identifier": "y"}]}}, "server_json.name"),
    ({"server_json": {"name": "io.x/y", "version": "latest",
                      "packages": [{"registryType": "npm", "identifier": "y"}]}}, "server_json.version"),
    ({"server_json": {"name": "io.x/y", "version": "1.0.0", "packages": []}}, "server_json"),
    ({"mcpServers": {"w": {"command": "npx", "args": ["-y", "@a/b"]}}}, "mcp_servers.w.args"),
    (npm_submission(title="t" * 101), "title"),
    (npm_submission(description=12), "description"),
    (npm_submission(tags=["ok"] * 11), "tags"),
    (npm_submission(tags=["bad tag!"]), "tags.0"),
    (npm_submission(icon="javascript:alert(1)"), "icon"),
    (npm_submission(category="Not A Slug"), "category"),
    (npm_submission(category="no-such-category"), "category"),
    (npm_submission(surprise=True), "surprise"),
    ({"openapi": "2.0", "info": {"title": "x"}, "paths": {}}, "openapi"),
    ({"openapi": "3.0.0", "info": {"title": "x", "version": "1"}, "paths": {"/a": {"get": {}}}}, "base_url"),
    ({"openapi_url": "ftp://example.com/spec.json"}, "openapi_url"),
    ({}, ""),
    ({"mcpServers": {"a": {"command": "npx", "args": ["a@1.0.0"]}, "b": {"command": "npx", "args": ["b@1.0.0"]}}},
     "mcp_servers"),
]


async def test_every_bad_field_is_a_clean_4xx_and_stores_nothing(catalog):
    app, c = catalog
    for body, field in BAD:
        r = await c.post("/api/v1/servers", json=body, headers=as_user())
        assert r.status_code == 422, (body, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        fields = [e["field"] for e in r.json().get("errors", [])]
        assert any(f.startswith(field) for f in fields), (field, fields)
    # not JSON, not an object, too big, anonymous
    r = await c.post("/api/v1/servers", content=b"{not json", headers={**as_user(), "content-type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
    r = await c.post("/api/v1/servers", json=[1, 2], headers=as_user())
    assert r.status_code == 422
    big = json.dumps(npm_submission(readme="x" * 10_000_000)).encode()
    r = await c.post("/api/v1/servers", content=big, headers={**as_user(), "content-type": "application/json"})
    assert r.status_code == 413 and r.headers["content-type"].startswith("application/problem+json")

    async def chunks():
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    r = await c.post("/api/v1/servers", content=chunks(), headers={**as_user(), "content-type": "application/json"})
    assert r.status_code == 413
    r = await c.post("/api/v1/servers", json=npm_submission())
    assert r.status_code == 401
    assert await _count(app, Server) == 0 and await _count(app, bus_tables.outbox) == 0


async def test_owner_updates_and_withdraws_admin_disables_and_enables(catalog):
    app, c = catalog
    slug = (await c.post("/api/v1/servers", json=npm_submission(), headers=as_user())).json()["slug"]
    r = await c.patch(f"/api/v1/servers/{slug}", json={"title": "Weather", "tags": ["天气", "weather"]},
                      headers=as_user())
    assert r.status_code == 200 and r.json()["title"] == "Weather" and r.json()["tags"] == ["天气", "weather"]
    assert (await c.patch(f"/api/v1/servers/{slug}", json={"title": "Mine"}, headers=as_user(OTHER))).status_code == 403
    assert (await c.patch(f"/api/v1/servers/{slug}", json={"featured": True}, headers=as_user())).status_code == 403
    assert (await c.post(f"/api/v1/servers/{slug}/disable", headers=as_user())).status_code == 403
    r = await c.post(f"/api/v1/servers/{slug}/disable", json={"reason": "spam"}, headers=as_admin())
    assert r.json() == {"slug": slug, "status": "disabled", "changed": True}
    r = await c.post(f"/api/v1/servers/{slug}/disable", headers=as_admin())
    assert r.json()["changed"] is False
    r = await c.post(f"/api/v1/servers/{slug}/enable", headers=as_admin())
    assert r.json() == {"slug": slug, "status": "submitted", "changed": True}
    r = await c.post(f"/api/v1/servers/{slug}/withdraw", headers=as_user())
    assert r.json()["status"] == "disabled"
    async with app.state.runtime.sessions() as s:
        subjects = [x[0] for x in (await s.execute(select(bus_tables.outbox.c.subject)
                                                 .order_by(bus_tables.outbox.c.id))).all()]
    # the edit is an event too (the catalog's worker re-projects B from it); the refused ones are not
    # the admin's decisions are audited (admin.action_recorded, right after each); the owner's withdrawal is not
    assert subjects == ["server.submitted", "server.updated", "server.disabled", "admin.action_recorded",
                        "server.enabled", "admin.action_recorded", "server.disabled"]
    # not published: hidden from the public, visible to its owner and admins
    assert (await c.get(f"/api/v1/servers/{slug}")).status_code == 404
    assert (await c.get(f"/api/v1/servers/{slug}", headers=as_user())).json()["status"] == "disabled"
    assert (await c.get(f"/api/v1/servers/{slug}", headers=as_user(ADMIN, "admin"))).status_code == 200


async def test_my_servers_lists_only_mine_with_their_status(catalog):
    _app, c = catalog
    mine = (await c.post("/api/v1/servers", json=npm_submission(), headers=as_user())).json()
    theirs = (await c.post("/api/v1/servers", json=npm_submission(pkg="@other/tool"), headers=as_user(OTHER))).json()
    r = await c.get("/api/v1/me/servers", headers=as_user())
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["slug"] for i in body["items"]] == [mine["slug"]] and body["total"] == 1
    assert body["items"][0]["status"] == "submitted" and body["items"][0]["version"] == "1.0.0"
    other = (await c.get("/api/v1/me/servers", headers=as_user(OTHER))).json()
    assert [i["slug"] for i in other["items"]] == [theirs["slug"]]
    anon = await c.get("/api/v1/me/servers")
    assert anon.status_code == 401 and anon.headers["content-type"].startswith("application/problem+json")
    bad = await c.get("/api/v1/me/servers", params={"page_size": 1000}, headers=as_user())
    assert bad.status_code == 422
