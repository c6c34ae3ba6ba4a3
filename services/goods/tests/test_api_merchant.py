"""Merchant and admin queries: a merchant sees and changes only their own products; plans,
entitlements (emitted for the ratelimit service, versioned), usage with pseudonymised callers;
every action recorded as admin.action_recorded."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from services.goods.tests.goods_helpers import apply, as_platform, as_user, outbox, server
from wemcp.common.events.calls import McpCallCompleted, McpCallsCompleted
from wemcp.goods import handlers as h

A, B = uuid.uuid4(), uuid.uuid4()


def problem(r: Any, status: int) -> bool:
    return r.status_code == status and r.headers["content-type"].startswith("application/problem+json")


async def two_merchants(rt: Any) -> tuple[Any, Any]:
    return await server(rt, A, "a-weather"), await server(rt, B, "b-maps")


async def test_a_merchant_sees_only_their_own_products(goods):
    rt, http = goods
    pa, pb = await two_merchants(rt)
    me = as_user(A, "merchant")
    r = await http.get("/api/v1/merchant/products", headers=me)
    assert r.status_code == 200
    assert [i["id"] for i in r.json()["items"]] == [str(pa.id)] and r.json()["total"] == 1
    assert (await http.get(f"/api/v1/merchant/products/{pa.id}", headers=me)).json()["merchant_id"] == str(A)

    # every id-taking route refuses B's product to A, as if it did not exist
    plan_b = (await http.get(f"/api/v1/admin/goods/{pb.id}/plans", headers=as_user(uuid.uuid4(), "admin"))).json()[
        "items"
    ][0]["id"]
    calls = [
        ("GET", f"/api/v1/merchant/products/{pb.id}", None),
        ("PATCH", f"/api/v1/merchant/products/{pb.id}", {"title": "mine now"}),
        ("POST", f"/api/v1/merchant/products/{pb.id}/list", None),
        ("POST", f"/api/v1/merchant/products/{pb.id}/delist", None),
        ("GET", f"/api/v1/merchant/products/{pb.id}/plans", None),
        ("POST", f"/api/v1/merchant/products/{pb.id}/plans", {"code": "pro", "name": "Pro"}),
        ("PATCH", f"/api/v1/merchant/products/{pb.id}/plans/{plan_b}", {"name": "x"}),
        ("GET", f"/api/v1/merchant/products/{pb.id}/entitlements", None),
        ("PUT", f"/api/v1/merchant/products/{pb.id}/entitlements/{uuid.uuid4()}", {"plan_id": plan_b}),
        ("DELETE", f"/api/v1/merchant/products/{pb.id}/entitlements/{B}", None),
        ("GET", f"/api/v1/merchant/products/{pb.id}/usage", None),
    ]
    for method, path, body in calls:
        r = await http.request(method, path, json=body, headers=me)
        assert problem(r, 404), (method, path, r.status_code, r.text)
        assert "b-maps" not in r.text and str(B) not in r.json()["detail"]
        # a plain user is refused the merchant area, an anonymous caller is asked to sign in
        assert problem(await http.request(method, path, json=body, headers=as_user(B, "user")), 403), path
        assert problem(await http.request(method, path, json=body), 401), path
    # A's plan id on B's product: still nothing
    plan_a = (await http.get(f"/api/v1/merchant/products/{pa.id}/plans", headers=me)).json()["items"][0]["id"]
    r = await http.patch(f"/api/v1/merchant/products/{pa.id}/plans/{plan_b}", json={"name": "x"}, headers=me)
    assert problem(r, 404)
    r = await http.patch(f"/api/v1/merchant/products/{pb.id}/plans/{plan_a}", json={"name": "x"}, headers=me)
    assert problem(r, 404)
    # nothing of B's changed
    got = (await http.get(f"/api/v1/admin/goods/{pb.id}", headers=as_user(uuid.uuid4(), "admin"))).json()
    assert got["title"] == "b-maps title" and got["status"] == "listed"
    # the admin area is for admins
    assert problem(await http.get("/api/v1/admin/goods", headers=me), 403)
    assert (await http.get("/api/v1/admin/goods", headers=as_user(uuid.uuid4(), "admin"))).json()["total"] == 2


async def test_copy_and_listing_are_the_merchants_and_recorded(goods):
    rt, http = goods
    pa, _ = await two_merchants(rt)
    me = as_user(A, "merchant")
    r = await http.patch(
        f"/api/v1/merchant/products/{pa.id}", json={"title": "Weather Pro 天气", "description": "d"}, headers=me
    )
    assert r.status_code == 200 and r.json()["title"] == "Weather Pro 天气" and r.json()["copy_edited"]
    assert problem(await http.patch(f"/api/v1/merchant/products/{pa.id}", json={"title": ""}, headers=me), 422)
    assert problem(await http.patch(f"/api/v1/merchant/products/{pa.id}", json={"price": 1}, headers=me), 422)
    r = await http.post(f"/api/v1/merchant/products/{pa.id}/delist", json={"reason": "maintenance"}, headers=me)
    assert r.status_code == 200 and r.json()["status"] == "delisted"
    assert (await http.get(f"/api/v1/goods/{pa.id}")).status_code == 404
    r = await http.post(f"/api/v1/merchant/products/{pa.id}/list", headers=me)
    assert r.status_code == 200 and r.json()["status"] == "listed"
    assert (await http.get(f"/api/v1/goods/{pa.id}")).json()["title"] == "Weather Pro 天气"
    actions = [(e["action"], e["actor_id"], e["target_id"]) for e in await outbox(rt, "admin.action_recorded")]
    assert actions == [
        ("product.edit", str(A), str(pa.id)),
        ("product.delist", str(A), str(pa.id)),
        ("product.list", str(A), str(pa.id)),
    ]


async def test_plans_and_entitlements_reach_the_ratelimit_service_as_versioned_events(goods):
    rt, http = goods
    pa, _ = await two_merchants(rt)
    me, user = as_user(A, "merchant"), uuid.uuid4()
    base = f"/api/v1/merchant/products/{pa.id}"
    r = await http.post(
        f"{base}/plans",
        json={"code": "pro", "name": "Pro", "calls_per_day": 5000, "price_cents": 9900, "currency": "CNY"},
        headers=me,
    )
    assert r.status_code == 201, r.text
    pro = r.json()
    assert problem(await http.post(f"{base}/plans", json={"code": "pro", "name": "again"}, headers=me), 409)
    assert problem(await http.post(f"{base}/plans", json={"code": "free", "name": "x"}, headers=me), 409)
    assert problem(await http.post(f"{base}/plans", json={"code": "Bad Code", "name": "x"}, headers=me), 422)
    assert problem(
        await http.post(f"{base}/plans", json={"code": "neg", "name": "x", "calls_per_day": -1}, headers=me), 422
    )
    free = next(p for p in (await http.get(f"{base}/plans", headers=me)).json()["items"] if p["is_free"])
    assert problem(await http.patch(f"{base}/plans/{free['id']}", json={"active": False}, headers=me), 403)

    until = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    r = await http.put(f"{base}/entitlements/{user}", json={"plan_id": pro["id"], "expires_at": until}, headers=me)
    assert r.status_code == 200, r.text
    assert r.json()["plan"]["code"] == "pro" and r.json()["version"] == 1
    assert problem(await http.put(f"{base}/entitlements/{user}", json={"plan_id": str(uuid.uuid4())}, headers=me), 404)
    assert problem(
        await http.put(
            f"{base}/entitlements/{user}", json={"plan_id": pro["id"], "expires_at": "2020-01-01T00:00:00Z"}, headers=me
        ),
        422,
    )
    assert problem(
        await http.put(
            f"{base}/entitlements/{user}", json={"plan_id": pro["id"], "expires_at": "2030-01-01T00:00:00"}, headers=me
        ),
        422,
    )  # no time zone
    listed = (await http.get(f"{base}/entitlements", headers=me)).json()
    assert [i["user_id"] for i in listed["items"]] == [str(user)]

    # what the platform's services read (internal query)
    q = {"kind": "server", "subject": "a-weather"}
    got = (await http.get(f"/internal/goods/entitlements/{user}", params=q, headers=as_platform())).json()
    assert got["entitled"] and got["calls_per_day"] == 5000 and got["plan"]["code"] == "pro"
    other = (await http.get(f"/internal/goods/entitlements/{uuid.uuid4()}", params=q, headers=as_platform())).json()
    assert not other["entitled"] and other["calls_per_day"] == 1000 and other["plan"]["code"] == "free"
    assert problem(
        await http.get(f"/internal/goods/entitlements/{user}", params=q, headers=as_user(user, "superadmin")), 403
    )
    assert problem(await http.get(f"/internal/goods/entitlements/{user}", params=q), 401)

    # raising the plan re-emits its holders' entitlement; revoking ends it
    r = await http.patch(f"{base}/plans/{pro['id']}", json={"calls_per_day": 8000}, headers=me)
    assert r.status_code == 200 and r.json()["calls_per_day"] == 8000
    assert (await http.delete(f"{base}/entitlements/{user}", headers=me)).status_code == 204
    assert problem(await http.delete(f"{base}/entitlements/{user}", headers=me), 404)
    events = await outbox(rt, "goods.entitlement_changed")
    assert [(e["version"], e["per_user_daily"], e["active"], e["subject_id"], e["subject_kind"]) for e in events] == [
        (1, 5000, True, "a-weather", "server"),
        (2, 8000, True, "a-weather", "server"),
        (3, 8000, False, "a-weather", "server"),
    ]
    assert {e["user_id"] for e in events} == {str(user)}
    got = (await http.get(f"/internal/goods/entitlements/{user}", params=q, headers=as_platform())).json()
    assert not got["entitled"] and got["calls_per_day"] == 1000
    actions = [e["action"] for e in await outbox(rt, "admin.action_recorded")]
    assert actions == ["plan.create", "entitlement.grant", "plan.update", "entitlement.revoke"]


async def test_usage_per_day_with_pseudonymised_callers(goods):
    rt, http = goods
    pa, pb = await two_merchants(rt)
    u1, u2 = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)

    def call(user: uuid.UUID | None, slug: str, status: str = "ok") -> McpCallCompleted:
        return McpCallCompleted(
            user_id=user,
            server_slug=slug,
            method="tools/call",
            tool="t",
            status=status,
            latency_ms=3.0,
            key_source="system",
            occurred_at=now,
        )

    batch = McpCallsCompleted(
        calls=[
            call(u1, "a-weather"),
            call(u1, "a-weather"),
            call(u2, "a-weather", "refused"),
            call(None, "a-weather", "error"),
            call(u1, "b-maps"),
        ]
    )
    await apply(rt, h.on_calls_completed, [batch])
    me = as_user(A, "merchant")
    r = await http.get(f"/api/v1/merchant/products/{pa.id}/usage", headers=me)
    assert r.status_code == 200, r.text
    body = r.json()
    [day] = body["days"]
    assert (day["calls"], day["refused"], day["errors"], day["distinct_users"]) == (4, 1, 1, 3)
    callers = {c["user"]: (c["calls"], c["refused"]) for c in body["top_callers"]}
    assert sorted(callers.values()) == [(1, 0), (1, 1), (2, 0)] and "anonymous" in callers
    assert str(u1) not in r.text and str(u2) not in r.text and u1.hex not in r.text  # pseudonyms only
    # the same caller has another pseudonym on another product (unlinkable across merchants)
    rb = (await http.get(f"/api/v1/admin/goods/{pb.id}/usage", headers=as_user(uuid.uuid4(), "admin"))).json()
    assert not set(callers) & {c["user"] for c in rb["top_callers"]}
    total = (await http.get("/api/v1/merchant/usage", headers=me)).json()
    assert total["products"] == 1 and total["days"][0]["calls"] == 4  # B's calls are not A's
    assert problem(
        await http.get(
            f"/api/v1/merchant/products/{pa.id}/usage",
            params={"since": "2026-12-02", "until": "2026-12-01"},
            headers=me,
        ),
        422,
    )
    assert problem(
        await http.get(f"/api/v1/merchant/products/{pa.id}/usage", params={"since": "yesterday"}, headers=me), 422
    )
