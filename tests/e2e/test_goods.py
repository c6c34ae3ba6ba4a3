"""Goods end to end through the gateway, with every service as a real process: a merchant's public
agent becomes their product (agent.saved → goods); they list their products, see its usage and grant
a raised plan that the ratelimit service applies to that user's quota; they cannot read another
merchant's product; the internal goods routes cannot be reached from outside; the superadmin
publishes an announcement that appears publicly (and in the catalog's news feed) while an admin is
refused."""

from __future__ import annotations

import uuid
from typing import Any

import httpx2 as httpx
import pytest

from tests.e2e.e2e_kit import new_account
from wemcp.common.events.calls import McpCallCompleted, McpCallsCompleted
from wemcp.devstack.stack import Stack
from wemcp.devstack.testing import wait_for
from wemcp.testkit.catalog import publish

pytestmark = pytest.mark.e2e


async def account(stack: Stack, role: str) -> tuple[str, dict[str, str]]:
    """An account with ``role``: its id and the headers with its platform API key."""
    made = await new_account(stack, f"e2e-{role}", role)
    return made.id, made.headers


async def public_agent(c: httpx.AsyncClient, who: dict[str, str], name: str) -> str:
    r = await c.post("/api/v1/agents", headers=who, json={"name": name, "description": f"{name} helps",
                                                          "model": "scripted-1", "visibility": "public",
                                                          "owner_kind": "merchant"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def test_merchants_plans_internal_routes_and_announcements_through_the_gateway(stack: Stack, gateway_url: str):
    a_id, a = await account(stack, "merchant")
    _, b = await account(stack, "merchant")
    _, admin = await account(stack, "admin")
    user_id, user = await account(stack, "user")
    _, superadmin = await account(stack, "superadmin")
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as c:
        agent_a = await public_agent(c, a, "Trip planner")
        agent_b = await public_agent(c, b, "Tax helper")

        async def my_products(who: dict[str, str]) -> list[dict[str, Any]] | None:
            r = await c.get("/api/v1/merchant/products", headers=who)
            assert r.status_code == 200, r.text
            items = r.json()["items"]
            return items if items and items[0]["status"] == "listed" else None

        [pa] = await wait_for(lambda: my_products(a), 30)
        [pb] = await wait_for(lambda: my_products(b), 30)
        assert (pa["slug"], pa["kind"], pa["merchant_id"]) == (agent_a, "agent", a_id)
        assert pb["slug"] == agent_b
        public = (await c.get(f"/api/v1/goods/{pa['id']}")).json()
        assert public["title"] == "Trip planner" and public["plans"][0]["calls_per_day"] == 100

        # another merchant's product: not found, whichever route; the admin area is refused
        for path in (f"/api/v1/merchant/products/{pb['id']}", f"/api/v1/merchant/products/{pb['id']}/usage",
                     f"/api/v1/merchant/products/{pb['id']}/plans"):
            r = await c.get(path, headers=a)
            assert r.status_code == 404 and "Tax helper" not in r.text, path
        assert (await c.patch(f"/api/v1/merchant/products/{pb['id']}", json={"title": "mine"},
                              headers=a)).status_code == 404
        assert (await c.get("/api/v1/merchant/products", headers=user)).status_code == 403
        assert (await c.get("/api/v1/admin/goods", headers=a)).status_code == 403
        assert (await c.get(f"/api/v1/admin/goods/{pb['id']}", headers=admin)).status_code == 200

        # usage: calls to the agent, as the gateway publishes them, appear per day with distinct users
        assert stack.nats_url
        calls = [McpCallCompleted(user_id=uuid.UUID(user_id), server_slug=f"agent-{agent_a}",
                                  agent_id=uuid.UUID(agent_a), method="tools/call", status=status, latency_ms=5.0)
                 for status in ("ok", "ok", "refused")]
        batch = McpCallsCompleted(gateway="e2e", calls=calls)
        await publish(stack.nats_url, batch)

        async def usage() -> dict[str, Any] | None:
            r = await c.get(f"/api/v1/merchant/products/{pa['id']}/usage", headers=a)
            assert r.status_code == 200, r.text
            return r.json() if r.json()["days"] else None

        got = await wait_for(usage, 30)
        assert [(d["calls"], d["refused"], d["distinct_users"]) for d in got["days"]] == [(3, 1, 1)]
        assert user_id not in str(got) and got["top_callers"][0]["user"].startswith("u_")

        # a raised plan granted to a user: the ratelimit service applies it to their quota
        r = await c.post(f"/api/v1/merchant/products/{pa['id']}/plans",
                         json={"code": "pro", "name": "Pro", "calls_per_day": 500, "price_cents": 1900}, headers=a)
        assert r.status_code == 201, r.text
        r = await c.put(f"/api/v1/merchant/products/{pa['id']}/entitlements/{user_id}",
                        json={"plan_id": r.json()["id"]}, headers=a)
        assert r.status_code == 200, r.text

        async def my_limit() -> int | None:
            r = await c.get("/api/v1/me/usage", params={"agent": agent_a}, headers=user)
            assert r.status_code == 200, r.text
            [row] = [x for x in r.json()["agents"] if x["id"] == agent_a]
            return row["limit"] if row["limit"] == 500 else None

        assert await wait_for(my_limit, 30) == 500

        # internal goods routes are not reachable from outside, credential or not
        for path in (f"/internal/goods/products/{pa['id']}", f"/internal/goods/entitlements/{user_id}",
                     f"/api/v1/internal/goods/products/{pa['id']}", "/api/v1/goods/../../internal/goods/products"):
            for headers in ({}, superadmin, {"X-WeMcp-Assertion": "v1.local.e30.x"}):
                r = await c.get(path, headers=headers, params={"kind": "agent", "subject": agent_a})
                assert r.status_code in (401, 404), (path, r.status_code)
                assert '"slug"' not in r.text and '"merchant_id"' not in r.text  # no product leaked

        # announcements: the superadmin publishes, the public sees it, the news feed carries it
        body = {"title": {"zh": "维护通知", "en": "Maintenance"}, "body": {"en": "Tonight."}, "pinned": True}
        r = await c.post("/api/v1/admin/announcements", json=body, headers=admin)
        assert r.status_code == 403, r.text
        r = await c.post("/api/v1/admin/announcements", json=body, headers=superadmin)
        assert r.status_code == 201, r.text
        ann = r.json()["id"]
        listed = (await c.get("/api/v1/announcements")).json()["items"]
        assert listed[0]["id"] == ann and listed[0]["title"]["zh"] == "维护通知"

        async def in_news() -> bool:
            items = (await c.get("/api/v1/news", params={"kind": "announcement"})).json()["items"]
            return any(i["id"] == ann and i["title"] == "Maintenance" for i in items)

        await wait_for(in_news, 30)
        assert (await c.delete(f"/api/v1/admin/announcements/{ann}", headers=admin)).status_code == 403
        assert (await c.delete(f"/api/v1/admin/announcements/{ann}", headers=superadmin)).status_code == 204
        assert ann not in [i["id"] for i in (await c.get("/api/v1/announcements")).json()["items"]]

        async def out_of_news() -> bool:
            items = (await c.get("/api/v1/news", params={"kind": "announcement"})).json()["items"]
            return all(i["id"] != ann for i in items)

        await wait_for(out_of_news, 30)
