"""Products kept in step with the server and agent lifecycle (idempotent, order-safe) by the event
handlers, and what the public catalogue shows of them."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from sqlalchemy import select

from services.goods.tests.goods_helpers import apply, as_user, at, product_of, publish, server
from wemcp.common.events.agents import AgentSaved
from wemcp.common.events.servers import ServerDeployed, ServerDisabled, ServerEnabled, ServerSubmitted
from wemcp.common.events.users import UserRegistered, UserRoleChanged
from wemcp.devstack.testing import wait_for
from wemcp.goods import handlers as h
from wemcp.goods.models import Plan


async def test_a_server_becomes_a_listed_product_with_the_free_plan_through_the_bus(goods, infra):
    rt, http = goods
    merchant, sid = uuid.uuid4(), uuid.uuid4()
    await publish(
        infra.nats_url,
        UserRegistered(user_id=merchant, login="shop", role="merchant"),
        ServerSubmitted(
            server_id=sid,
            slug="weather",
            name="io.github.shop/weather",
            owner_id=merchant,
            revision=1,
            spec={"title": "Weather 天气", "description": "forecasts"},
        ),
        ServerDeployed(server_id=sid, slug="weather", generation=1, seq=4),
    )

    async def listed() -> Any:
        p = await product_of(rt, sid)
        return p if p is not None and p.status == "listed" and p.merchant_id == merchant and p.title else None

    p = await wait_for(listed, 15)
    r = await http.get("/api/v1/goods")
    assert r.status_code == 200
    [item] = r.json()["items"]
    assert item["id"] == str(p.id) and item["slug"] == "weather" and item["seller"] == "merchant"
    assert item["title"] == "Weather 天气"
    assert [(x["code"], x["calls_per_day"], x["price_cents"]) for x in item["plans"]] == [("free", 1000, 0)]
    assert "owner_id" not in item and "merchant_id" not in item  # the public view names no account
    one = await http.get(f"/api/v1/goods/{p.id}")
    assert one.status_code == 200 and one.json()["id"] == str(p.id)

    # disabled through the bus: delisted, gone from the public catalogue
    await publish(infra.nats_url, ServerDisabled(server_id=sid, slug="weather", decision_seq=1))
    await wait_for(lambda: _status(rt, sid, "delisted"), 15)
    assert (await http.get("/api/v1/goods")).json()["items"] == []
    assert (await http.get(f"/api/v1/goods/{p.id}")).status_code == 404


async def _status(rt: Any, sid: uuid.UUID, status: str) -> bool:
    p = await product_of(rt, sid)
    return p is not None and p.status == status


async def test_decisions_in_every_order_end_in_the_latest(goods):
    """disable(1), enable(2), disable(3), each possibly repeated, in every order: the product ends as
    decision 3 said (delisted); without decision 3, as decision 2 said (listed)."""
    rt, _ = goods
    for with_third in (True, False):
        decisions: list[Any] = [ServerDisabled, ServerEnabled] + ([ServerDisabled] if with_third else [])
        for order in itertools.permutations(range(len(decisions))):
            p = await server(rt, None, f"s-{uuid.uuid4().hex[:8]}", role=None)
            events = [decisions[i](server_id=p.subject_ref, slug=p.slug, decision_seq=i + 1) for i in order]
            for e in [*events, events[0]]:  # the first one redelivered last
                await apply(rt, h.on_server_disabled if isinstance(e, ServerDisabled) else h.on_server_enabled, e)
            got = await product_of(rt, p.subject_ref)
            assert got is not None
            assert got.status == ("delisted" if with_third else "listed"), (with_third, order)
            assert got.decision_seq == len(decisions)


async def test_an_older_submission_or_deployment_changes_nothing(goods):
    rt, _ = goods
    owner = uuid.uuid4()
    p = await server(rt, owner, "maps")

    async def submitted(owner_id: uuid.UUID, revision: int) -> None:
        event = ServerSubmitted(
            server_id=p.subject_ref,
            slug="maps",
            name="io.github.acme/maps",
            owner_id=owner_id,
            revision=revision,
            spec={"title": f"Maps v{revision}"},
        )
        await apply(rt, h.on_server_submitted, event)

    await submitted(owner, 3)
    await submitted(uuid.uuid4(), 2)
    await apply(rt, h.on_server_deployed, ServerDeployed(server_id=p.subject_ref, slug="maps", generation=2, seq=5))
    await apply(rt, h.on_server_deployed, ServerDeployed(server_id=p.subject_ref, slug="maps-old", generation=1, seq=9))
    got = await product_of(rt, p.subject_ref)
    assert got is not None
    assert (got.title, got.owner_id, got.revision) == ("Maps v3", owner, 3)
    assert (got.slug, got.deploy_position) == ("maps", [2, 5])
    async with rt.sessions() as s:  # one free plan, however many events
        plans = (await s.execute(select(Plan).where(Plan.product_id == got.id))).scalars().all()
    assert [(x.code, x.calls_per_day) for x in plans] == [("free", 1000)]


async def test_merchant_follows_the_owners_role_unless_an_admin_assigned_one(goods):
    rt, http = goods
    owner, other = uuid.uuid4(), uuid.uuid4()
    p = await server(rt, owner, "clock", role="user")
    assert (await product_of(rt, p.subject_ref)).merchant_id is None  # type: ignore[union-attr]  # the platform's
    await apply(rt, h.on_user_role_changed, UserRoleChanged(user_id=owner, role="merchant", occurred_at=at(5)))
    assert (await product_of(rt, p.subject_ref)).merchant_id == owner  # type: ignore[union-attr]
    # an older role event arriving late changes nothing
    await apply(rt, h.on_user_role_changed, UserRoleChanged(user_id=owner, role="user", occurred_at=at(1)))
    assert (await product_of(rt, p.subject_ref)).merchant_id == owner  # type: ignore[union-attr]

    # an admin assigns another merchant: it sticks, whatever the owner's role does next
    await apply(rt, h.on_user_registered, UserRegistered(user_id=other, login="other", role="merchant"))
    admin = as_user(uuid.uuid4(), "admin")
    r = await http.put(f"/api/v1/admin/goods/{p.id}/merchant", json={"merchant_id": str(other)}, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["merchant_id"] == str(other) and r.json()["merchant_assigned"] is True
    await apply(rt, h.on_user_role_changed, UserRoleChanged(user_id=owner, role="merchant", occurred_at=at(9)))
    assert (await product_of(rt, p.subject_ref)).merchant_id == other  # type: ignore[union-attr]
    # only merchants can be assigned; only admins assign
    plain = uuid.uuid4()
    bad = await http.put(f"/api/v1/admin/goods/{p.id}/merchant", json={"merchant_id": str(plain)}, headers=admin)
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    for who in (as_user(other, "merchant"), as_user(owner, "user")):
        r = await http.put(f"/api/v1/admin/goods/{p.id}/merchant", json={"merchant_id": None}, headers=who)
        assert r.status_code == 403
    assert (await http.put(f"/api/v1/admin/goods/{p.id}/merchant", json={"merchant_id": None})).status_code == 401
    missing = await http.put(f"/api/v1/admin/goods/{uuid.uuid4()}/merchant", json={"merchant_id": None}, headers=admin)
    assert missing.status_code == 404


async def test_agents_are_products_while_public(goods):
    rt, http = goods
    owner, aid = uuid.uuid4(), uuid.uuid4()
    await apply(rt, h.on_user_registered, UserRegistered(user_id=owner, login="m", role="merchant"))

    def saved(minute: int, **kw: Any) -> AgentSaved:
        base: dict[str, Any] = dict(
            agent_id=aid,
            owner_id=owner,
            owner_kind="merchant",
            name="Trip planner",
            description="plans trips",
            visibility="public",
            saved_at=at(minute),
        )
        return AgentSaved(**{**base, **kw})

    await apply(rt, h.on_agent_saved, saved(1))
    p = await product_of(rt, aid)
    assert p is not None and p.status == "listed" and p.kind == "agent" and p.slug == str(aid)
    item = (await http.get("/api/v1/goods", params={"kind": "agent"})).json()["items"][0]
    assert [(x["code"], x["calls_per_day"]) for x in item["plans"]] == [("free", 100)]
    await apply(rt, h.on_agent_saved, saved(3, visibility="private"))
    await apply(rt, h.on_agent_saved, saved(2, name="older", visibility="public"))  # late: ignored
    p = await product_of(rt, aid)
    assert p is not None and p.status == "delisted" and p.name == "Trip planner"
    await apply(rt, h.on_agent_saved, saved(4))
    assert (await product_of(rt, aid)).status == "listed"  # type: ignore[union-attr]
    await apply(rt, h.on_agent_saved, saved(5, deleted=True))
    assert (await product_of(rt, aid)).status == "delisted"  # type: ignore[union-attr]
    assert (await http.get("/api/v1/goods", params={"kind": "agent"})).json()["total"] == 0
