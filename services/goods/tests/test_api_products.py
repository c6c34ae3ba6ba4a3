"""The public catalogue's search (pagination in the body, bad input refused) and the internal
routes' credentials."""

from __future__ import annotations

import uuid

from services.goods.tests.goods_helpers import as_platform, as_user, server


async def test_public_search_paginates_in_the_body_and_refuses_bad_input(goods):
    rt, http = goods
    m = uuid.uuid4()
    for i in range(5):
        await server(rt, m if i % 2 else None, f"geo-{i}", role="merchant" if i % 2 else None)
    r = await http.post("/api/v1/goods/search", json={"query": "geo", "page": 2, "page_size": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 5 and body["page"] == 2 and len(body["items"]) == 2
    r = await http.post("/api/v1/goods/search", json={"seller": "merchant"})
    assert r.json()["total"] == 2 and {i["seller"] for i in r.json()["items"]} == {"merchant"}
    r = await http.post("/api/v1/goods/search", json={"query": "100%_x"})
    assert r.status_code == 200 and r.json()["total"] == 0
    for bad in ({"page_size": 1000}, {"page": 0}, {"kind": "robot"}, {"unknown": 1}):
        r = await http.post("/api/v1/goods/search", json=bad)
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json"), bad
    assert (await http.get("/api/v1/goods/not-a-uuid")).status_code == 422
    assert (await http.get(f"/api/v1/goods/{uuid.uuid4()}")).status_code == 404


async def test_internal_routes_answer_the_platform_only(goods):
    rt, http = goods
    p = await server(rt, uuid.uuid4(), "tide")
    path = f"/internal/goods/products/{p.id}"
    assert (await http.get(path)).status_code == 401  # no credential
    assert (await http.get(path, headers={"X-WeMcp-Assertion": "v1.k.x.y"})).status_code == 401  # forged
    assert (await http.get(path, headers=as_user(uuid.uuid4(), "superadmin"))).status_code == 403  # a user's
    r = await http.get(path, headers=as_platform())
    assert r.status_code == 200 and r.json()["slug"] == "tide"
    r = await http.get("/internal/goods/products", params={"kind": "server", "subject": "tide"}, headers=as_platform())
    assert r.status_code == 200 and r.json()["id"] == str(p.id)
    assert (
        await http.get("/internal/goods/products", params={"kind": "server", "subject": "nope"}, headers=as_platform())
    ).status_code == 404
