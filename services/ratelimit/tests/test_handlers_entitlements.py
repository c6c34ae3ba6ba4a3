"""Entitlements granted through goods (goods.entitlement_changed) change one user's daily limit for
one server or agent: applied once, the highest version wins whatever the arrival order, and every
quota client sees the change without waiting for its snapshot to age."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import nats
import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from wemcp.common.events.goods import EntitlementChanged
from wemcp.common.service import running
from wemcp.devstack.testing import wait_for
from wemcp.quota.client import open_quota_client
from wemcp.quota.policy import PolicySet, StaticPolicies
from wemcp.ratelimit.config import Settings
from wemcp.ratelimit.main import SPEC
from wemcp.ratelimit.models import UserEntitlement

pytestmark = pytest.mark.usefixtures("clean_db", "clean_bus", "clean_redis")

USER, OTHER = uuid.uuid4(), uuid.uuid4()
ENT = uuid.uuid4()


def changed(version: int, per_user_daily: int | None, *, active: bool = True, subject: str = "maps",
            expires_at: datetime | None = None) -> EntitlementChanged:
    return EntitlementChanged(entitlement_id=ENT, user_id=USER, product_id=uuid.uuid4(), subject_kind="server",
                              subject_id=subject, plan_code="pro", per_user_daily=per_user_daily,
                              expires_at=expires_at, active=active, version=version)


async def publish(url: str, *events: EntitlementChanged) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for e in events:
            await js.publish(e.subject, e.model_dump_json().encode(), headers={"Nats-Msg-Id": str(e.event_id)})
    finally:
        await nc.close()


async def test_an_entitlement_sets_one_users_limit_once_and_in_version_order(infra, settings_for):
    settings = settings_for(Settings, policy_max_age_seconds=3600)  # only the announcement can refresh
    async with running(SPEC, settings) as app:
        redis = Redis.from_url(infra.redis_url)
        quota = await open_quota_client(redis, settings)
        try:
            first = changed(1, 3)
            await publish(infra.nats_url, first)

            def limit_is(user: uuid.UUID, n: int | None) -> bool:
                """What the quota client's policies say (without counting a call)."""
                entitled, plan = quota.policies.entitlement("server", "maps", str(user), time.time())
                return (plan if entitled else quota.policies.limits("server", "maps").per_user_daily) == n

            await wait_for(lambda: limit_is(USER, 3), 10)
            assert (await quota.decide(OTHER, "server", "maps")).limit == 1000  # only that user
            assert (await quota.decide(USER, "server", "other")).limit == 1000  # only that server
            got = [await quota.decide(USER, "server", "maps") for _ in range(4)]
            assert [d.allowed for d in got] == [True, True, True, False]
            assert "2 of 3 plan calls" in got[0].message
            assert got[3].reason == "user_limit" and got[3].limit == 3 and "all 3 plan calls" in got[3].message

            # the same event again (redelivered) and a stale version: nothing changes
            await publish(infra.nats_url, first, changed(1, 50))
            # then a newer state, followed by an older one arriving late
            await publish(infra.nats_url, changed(3, None, active=False), changed(2, 7))
            await wait_for(lambda: limit_is(USER, 1000), 10)
            async with app.state.runtime.sessions() as s:
                row = (await s.execute(select(UserEntitlement))).scalar_one()
            assert (row.version, row.active, row.per_user_daily) == (3, False, None)
            consumer = "ratelimit-goods-entitlement-changed"
            async with app.state.runtime.sessions() as s:
                done = (await s.execute(select(SPEC.tables.processed.c.event_id).where(  # type: ignore[union-attr]
                    SPEC.tables.processed.c.consumer == consumer))).scalars().all()  # type: ignore[union-attr]
            assert len(done) == 4  # the redelivered copy was deduplicated by JetStream or the consumer

            # an unlimited plan
            await publish(infra.nats_url, changed(4, None))
            await wait_for(lambda: limit_is(USER, None), 10)
            assert (await quota.decide(USER, "server", "maps")).remaining is None
        finally:
            await quota.aclose()
            await redis.aclose()


def test_an_expired_entitlement_no_longer_applies():
    now = time.time()
    ps = PolicySet.from_json(PolicySet(
        defaults=StaticPolicies().set.defaults,
        entitlements={("server", "maps", str(USER)): (5, now + 60), ("agent", "a1", str(USER)): (9, now - 1)},
    ).to_json(), StaticPolicies().set.defaults)
    assert ps.entitlement("server", "maps", str(USER), now) == (True, 5)
    assert ps.entitlement("server", "maps", str(USER), now + 61) == (False, None)
    assert ps.entitlement("agent", "a1", str(USER), now) == (False, None)
    assert ps.entitlement("server", "maps", str(OTHER), now) == (False, None)


async def test_expired_entitlements_leave_the_snapshot(infra, settings_for):
    settings = settings_for(Settings)
    async with running(SPEC, settings) as app:
        past = datetime.now(UTC) - timedelta(minutes=1)
        await publish(infra.nats_url, changed(1, 5, expires_at=past),
                      changed(1, 6, subject="live", expires_at=datetime.now(UTC) + timedelta(days=1)))

        async def both_stored() -> bool:
            async with app.state.runtime.sessions() as s:
                return len((await s.execute(select(UserEntitlement))).scalars().all()) == 2

        await wait_for(both_stored, 10)
        from wemcp.ratelimit.service import load_policy_set

        async with app.state.runtime.sessions() as s:
            ps = await load_policy_set(s, settings)
        assert list(ps.entitlements) == [("server", "live", str(USER))]
