"""The review queue: a publisher who is not trusted waits in ``pending_review`` and nothing deploys
(no ``server.submitted``) until an admin approves; a rejection carries a reason the submitter sees;
trusted publishers skip the queue; every admin decision is an ``admin.action_recorded``."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import select

from services.catalog.tests.catalog_helpers import ADMIN, OTHER, USER, as_admin, as_user, npm_submission
from wemcp.catalog.models import bus_tables

NEWBIE = str(uuid.UUID(int=7))


async def _events(app: Any, subject: str) -> list[dict[str, Any]]:
    async with app.state.runtime.sessions() as s:
        rows = (await s.execute(select(bus_tables.outbox.c.payload).where(bus_tables.outbox.c.subject == subject)
                                .order_by(bus_tables.outbox.c.id))).all()
    return [json.loads(r.payload) for r in rows]


async def _submit(c: Any, who: str, pkg: str = "@acme/weather-mcp", version: str = "1.0.0") -> dict[str, Any]:
    r = await c.post("/api/v1/servers", json=npm_submission(pkg, version), headers=as_user(who))
    assert r.status_code == 202, r.text
    return r.json()


async def test_a_new_publisher_waits_and_deploys_only_after_approval(catalog):
    app, c = catalog
    body = await _submit(c, NEWBIE)
    slug = body["slug"]
    assert body["status"] == "pending_review"
    assert await _events(app, "server.submitted") == []  # nothing downstream hears of it
    # the submitter sees it waiting; nobody else but admins sees it at all
    mine = await c.get(f"/api/v1/servers/{slug}", headers=as_user(NEWBIE))
    assert mine.status_code == 200 and mine.json()["status"] == "pending_review"
    assert (await c.get(f"/api/v1/servers/{slug}")).status_code == 404
    assert (await c.get(f"/api/v1/servers/{slug}", headers=as_user(OTHER))).status_code == 404

    queue = await c.get("/api/v1/admin/review", headers=as_admin())
    assert queue.status_code == 200, queue.text
    assert [i["slug"] for i in queue.json()["items"]] == [slug] and queue.json()["total"] == 1
    item = (await c.get(f"/api/v1/admin/review/{slug}", headers=as_admin())).json()
    assert item["packages"] == [{"registryType": "npm", "identifier": "@acme/weather-mcp", "version": "1.0.0",
                                 "runtimeHint": "npx", "transport": {"type": "stdio"}}]
    assert item["owner_id"] == NEWBIE and item["requested_at"] and item["status"] == "pending_review"
    inputs = {i["name"]: i for i in item["inputs"]}
    assert inputs["WEATHER_API_KEY"]["isSecret"] and "default" not in inputs["WEATHER_API_KEY"]
    assert "sk-live-secret-123" not in json.dumps(item)

    ok = await c.post(f"/api/v1/admin/review/{slug}/approve", json={"reason": "looks fine"}, headers=as_admin())
    assert ok.status_code == 200 and ok.json()["status"] == "submitted", ok.text
    [submitted] = await _events(app, "server.submitted")
    assert submitted["slug"] == slug and submitted["approved_by"] == ADMIN and submitted["revision"] == 1
    [audit] = await _events(app, "admin.action_recorded")
    assert (audit["action"], audit["actor_id"], audit["target_id"], audit["service"]) == \
        ("review.approve", ADMIN, slug, "catalog")
    assert audit["before"] == {"status": "pending_review"} and audit["after"]["status"] == "submitted"
    again = await c.post(f"/api/v1/admin/review/{slug}/approve", headers=as_admin())
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
    assert (await c.get("/api/v1/admin/review", headers=as_admin())).json()["items"] == []

    # the approved package's next version deploys without review
    newer = await _submit(c, NEWBIE, version="1.0.1")
    assert newer["status"] == "submitted" and len(await _events(app, "server.submitted")) == 2


async def test_a_rejection_carries_its_reason_and_a_resubmission_waits_again(catalog):
    app, c = catalog
    slug = (await _submit(c, NEWBIE))["slug"]
    short = await c.post(f"/api/v1/admin/review/{slug}/reject", json={"reason": ""}, headers=as_admin())
    assert short.status_code == 422 and short.headers["content-type"] == "application/problem+json"
    r = await c.post(f"/api/v1/admin/review/{slug}/reject", json={"reason": "the package runs a crypto miner"},
                     headers=as_admin())
    assert r.status_code == 200 and r.json()["status"] == "rejected", r.text
    seen = (await c.get(f"/api/v1/servers/{slug}", headers=as_user(NEWBIE))).json()
    assert seen["status"] == "rejected" and seen["review_reason"] == "the package runs a crypto miner"
    assert seen["status_detail"] == "the package runs a crypto miner"
    [rejected] = await _events(app, "server.rejected")
    assert rejected["reason"] == "the package runs a crypto miner" and rejected["actor_id"] == ADMIN
    assert await _events(app, "server.submitted") == []
    assert [a["action"] for a in await _events(app, "admin.action_recorded")] == ["review.reject"]
    # a rejected package cannot be approved without a new request; resubmitting (even the same version) waits
    assert (await c.post(f"/api/v1/admin/review/{slug}/approve", headers=as_admin())).status_code == 409
    again = await _submit(c, NEWBIE)
    assert again["status"] == "pending_review" and again["slug"] == slug
    assert (await c.get(f"/api/v1/servers/{slug}", headers=as_user(NEWBIE))).json()["review_reason"] is None
    assert await _events(app, "server.submitted") == []


async def test_trusted_publishers_and_admins_skip_the_queue(catalog):
    app, c = catalog
    assert (await _submit(c, USER))["status"] == "submitted"  # the fixture trusts USER
    admin = await c.post("/api/v1/servers", json=npm_submission("@acme/admin-tool", "1.0.0"), headers=as_admin())
    assert admin.json()["status"] == "submitted"
    # an admin trusts NEWBIE: their next package deploys at once; untrusting puts the next one in the queue
    r = await c.put(f"/api/v1/admin/publishers/{NEWBIE}", json={"trusted": True, "note": "known author"},
                    headers=as_admin())
    assert r.status_code == 200 and r.json()["trusted"] is True, r.text
    assert (await _submit(c, NEWBIE, "@newbie/one"))["status"] == "submitted"
    listed = (await c.get("/api/v1/admin/publishers", headers=as_admin())).json()["items"]
    assert NEWBIE in [p["user_id"] for p in listed]
    await c.put(f"/api/v1/admin/publishers/{NEWBIE}", json={"trusted": False}, headers=as_admin())
    assert (await _submit(c, NEWBIE, "@newbie/two"))["status"] == "pending_review"
    actions = [(a["action"], a["before"], a["after"]) for a in await _events(app, "admin.action_recorded")]
    assert actions == [("publisher.trust", {"trusted": False}, {"trusted": True}),
                       ("publisher.untrust", {"trusted": True}, {"trusted": False})]


async def test_servers_by_status_with_counts(catalog):
    _app, c = catalog
    waiting = (await _submit(c, NEWBIE, "@newbie/one"))["slug"]
    await _submit(c, USER)
    r = await c.get("/api/v1/admin/servers", headers=as_admin(), params={"status": "pending_review"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["counts"]["pending_review"] == 1 and body["counts"]["submitted"] == 1 and body["total"] == 2
    assert [i["slug"] for i in body["items"]] == [waiting]
    page = (await c.get("/api/v1/admin/servers", headers=as_admin(), params={"limit": 1})).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = (await c.get("/api/v1/admin/servers", headers=as_admin(),
                        params={"limit": 1, "cursor": page["next_cursor"]})).json()
    assert len(rest["items"]) == 1 and rest["items"][0]["slug"] != page["items"][0]["slug"]
    assert rest["next_cursor"] is None
    bad = await c.get("/api/v1/admin/servers", headers=as_admin(), params={"status": "nonsense"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    junk = await c.get("/api/v1/admin/servers", headers=as_admin(), params={"cursor": "garbage"})
    assert junk.status_code == 400


async def test_admin_routes_refuse_everyone_else(catalog):
    app, c = catalog
    slug = (await _submit(c, NEWBIE))["slug"]
    routes = [("GET", "/api/v1/admin/review", None), ("GET", f"/api/v1/admin/review/{slug}", None),
              ("POST", f"/api/v1/admin/review/{slug}/approve", {}),
              ("POST", f"/api/v1/admin/review/{slug}/reject", {"reason": "no reason at all"}),
              ("GET", "/api/v1/admin/servers", None), ("GET", "/api/v1/admin/publishers", None),
              ("PUT", f"/api/v1/admin/publishers/{NEWBIE}", {"trusted": True}),
              ("GET", "/api/v1/admin/categories", None),
              ("PUT", "/api/v1/admin/categories/tools", {"slug": "tools", "name": "Tools"}),
              ("DELETE", "/api/v1/admin/categories/tools", None)]
    for method, path, body in routes:
        anon = await c.request(method, path, json=body)
        assert anon.status_code == 401, (method, path, anon.text)
        for who in (NEWBIE, USER):  # the submitter themselves, a trusted publisher: neither is an admin
            r = await c.request(method, path, json=body, headers=as_user(who))
            assert r.status_code == 403, (method, path, r.text)
            assert r.headers["content-type"] == "application/problem+json"
        merchant = await c.request(method, path, json=body, headers=as_user(OTHER, "merchant"))
        assert merchant.status_code == 403
    # nothing moved
    assert (await c.get(f"/api/v1/servers/{slug}", headers=as_user(NEWBIE))).json()["status"] == "pending_review"
    assert await _events(app, "admin.action_recorded") == []
    missing = await c.post("/api/v1/admin/review/no-such-server/approve", headers=as_admin())
    assert missing.status_code == 404


async def test_category_changes_are_audited(catalog):
    app, c = catalog
    r = await c.put("/api/v1/admin/categories/tools", json={"slug": "tools", "name": "Tools"}, headers=as_admin())
    assert r.status_code == 200, r.text
    await c.put("/api/v1/categories/tools", json={"slug": "tools", "name": "Tools & more"}, headers=as_admin())
    assert (await c.delete("/api/v1/admin/categories/tools", headers=as_admin())).status_code == 204
    got = [(a["action"], a["before"], a["after"]) for a in await _events(app, "admin.action_recorded")]
    assert got == [("category.put", None, {"name": "Tools", "parent": None, "position": 0}),
                   ("category.put", {"name": "Tools", "parent": None, "position": 0},
                    {"name": "Tools & more", "parent": None, "position": 0}),
                   ("category.delete", {"name": "Tools & more", "parent": None, "position": 0}, None)]
