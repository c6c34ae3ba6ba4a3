"""The ratelimit service in-process: policy admin API and invalidation, usage from mcp.call.completed,
and the NATS request/reply decision path (test support, wemcp.testkit.quota_remote), against real
Postgres, NATS and Redis."""

from __future__ import annotations

import uuid

import httpx2 as httpx
import nats
import pytest
from redis.asyncio import Redis

from wemcp.common.events.calls import McpCallCompleted, McpCallsCompleted
from wemcp.common.identity import Identity
from wemcp.common.service import running
from wemcp.common.trust import PlatformHeaders
from wemcp.devstack.infra import free_port
from wemcp.devstack.testing import wait_for
from wemcp.quota.client import InvalidSubject, QuotaClient, open_quota_client
from wemcp.quota.policy import SNAPSHOT_KEY
from wemcp.ratelimit.config import Settings
from wemcp.ratelimit.main import SPEC
from wemcp.testkit.quota_remote import DecisionResponder, NatsQuotaClient

pytestmark = pytest.mark.usefixtures("clean_db", "clean_bus", "clean_redis")

SECRET = "service-test-agent-run-secret-000"
ADMIN = PlatformHeaders("ratelimit", Identity(uuid.uuid4(), "admin"), issuer="gateway")
USER_ID = uuid.uuid4()
USER = PlatformHeaders("ratelimit", Identity(USER_ID, "user"), issuer="gateway")


@pytest.fixture
async def app(settings_for):
    async with running(SPEC, settings_for(Settings, agent_run_secret=SECRET)) as app:
        yield app


@pytest.fixture
async def http(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rl") as c:
        yield c


def is_problem(r, status: int) -> bool:
    return r.status_code == status and r.headers["content-type"].startswith("application/problem+json")


async def test_policies_need_an_admin(http):
    assert is_problem(await http.get("/api/v1/policies"), 401)
    assert is_problem(await http.get("/api/v1/policies", headers=USER), 403)
    assert is_problem(await http.put("/api/v1/policies/servers/maps", json={"per_user_daily": 5},
                                     headers=USER), 403)
    r = await http.get("/api/v1/policies", headers=ADMIN)
    assert r.status_code == 200
    assert r.json()["defaults"] == {"server": {"per_user_daily": 1000, "global_daily_cap": None},
                                    "agent": {"per_user_daily": 100, "global_daily_cap": None}}


async def test_policy_change_reaches_a_gateways_client_without_waiting_for_expiry(http, infra, settings_for):
    redis = Redis.from_url(infra.redis_url)
    # what a gateway process holds: its own client and cache, max age far beyond the test's patience
    quota = await open_quota_client(redis, settings_for(Settings, policy_max_age_seconds=600))
    cache = quota.policies
    try:
        assert cache.limits("server", "maps").per_user_daily == 1000
        r = await http.put("/api/v1/policies/servers/maps", json={"per_user_daily": 2, "global_daily_cap": 50,
                                                                 "note": "beta"}, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["effective"] == {"per_user_daily": 2, "global_daily_cap": 50}
        await wait_for(lambda: _limit_is(cache, "maps", 2), timeout=5)
        user = uuid.uuid4()
        assert [(await quota.decide(user, "server", "maps")).allowed for _ in range(3)] == [True, True, False]

        r = await http.put("/api/v1/policies/defaults/agents", json={"per_user_daily": 7}, headers=ADMIN)
        assert r.status_code == 200
        await wait_for(lambda: _agent_limit_is(cache, 7), timeout=5)
        listed = (await http.get("/api/v1/policies", headers=ADMIN)).json()
        assert listed["defaults"]["agent"]["per_user_daily"] == 7
        assert listed["overrides"] == [{"kind": "server", "id": "maps", "per_user_daily": 2,
                                        "global_daily_cap": 50, "note": "beta"}]

        assert (await http.delete("/api/v1/policies/servers/maps", headers=ADMIN)).status_code == 204
        await wait_for(lambda: _limit_is(cache, "maps", 1000), timeout=5)
        got = (await http.get("/api/v1/policies/servers/maps", headers=ADMIN)).json()
        assert got["override"] is None and got["effective"]["per_user_daily"] == 1000
    finally:
        await quota.aclose()
        await redis.aclose()


async def _limit_is(cache, slug, n):
    return cache.limits("server", slug).per_user_daily == n


async def _agent_limit_is(cache, n):
    return cache.limits("agent", str(uuid.uuid4())).per_user_daily == n


async def test_bad_input_is_a_clean_4xx(http):
    put = "/api/v1/policies/servers/maps"
    assert is_problem(await http.put(put, json={"per_user_daily": -1}, headers=ADMIN), 422)
    assert is_problem(await http.put(put, json={"per_user_daily": "many"}, headers=ADMIN), 422)
    assert is_problem(await http.put(put, json={"unknown": 1}, headers=ADMIN), 422)
    as_json = {**ADMIN, "content-type": "application/json"}
    assert is_problem(await http.put(put, content=b"{not json", headers=as_json), 400)
    assert is_problem(await http.put("/api/v1/policies/agents/a1", json={"global_daily_cap": 5},
                                     headers=ADMIN), 422)
    assert is_problem(await http.put("/api/v1/policies/tools/x", json={}, headers=ADMIN), 422)
    assert is_problem(await http.put("/api/v1/policies/servers/a%20b", json={}, headers=ADMIN), 422)
    assert is_problem(await http.delete("/api/v1/policies/servers/never-set", headers=ADMIN), 404)
    assert is_problem(await http.get("/api/v1/usage/servers/maps?since=2026-02-01&until=2026-01-01",
                                     headers=ADMIN), 422)
    assert is_problem(await http.get("/api/v1/usage/servers/maps?since=yesterday", headers=ADMIN), 422)
    assert is_problem(await http.get("/api/v1/me/usage?server=a%7Bb", headers=USER), 422)
    assert is_problem(await http.get("/api/v1/me/usage", headers={"x-wemcp-user-id": "nope"}), 401)


async def _publish(nc, events):
    js = nc.jetstream()
    for e in events:
        await js.publish(e.subject, e.model_dump_json().encode(), headers={"Nats-Msg-Id": str(e.event_id)})


async def test_usage_from_completed_calls_and_live_counters(app, http, infra):
    quota = app.state.runtime.extras["quota"]
    agent = uuid.uuid4()
    for _ in range(3):  # the gateway admitted three system-key calls to maps
        assert (await quota.decide(USER_ID, "server", "maps")).allowed
    events = [McpCallCompleted(user_id=USER_ID, server_slug="maps", method="tools/call", key_source="system",
                               latency_ms=10) for _ in range(3)]
    events += [McpCallCompleted(user_id=USER_ID, server_slug="maps", method="tools/call", key_source="vault",
                                metered=False, latency_ms=10) for _ in range(2)]
    events += [McpCallCompleted(user_id=USER_ID, server_slug="maps", method="tools/call", key_source="system",
                                agent_id=agent, in_agent_run=True, metered=False, latency_ms=10)]
    events += [McpCallCompleted(user_id=USER_ID, server_slug="agent-x", agent_id=agent, method="tools/call",
                                key_source="system", latency_ms=30)]
    events += [McpCallCompleted(user_id=uuid.uuid4(), server_slug="maps", method="tools/call",
                                status="refused", latency_ms=1)]
    nc = await nats.connect(infra.nats_url)
    try:
        # the first three as gateways before batching sent them, the rest in one mcp.call.batch
        await _publish(nc, [*events[:3], McpCallsCompleted(gateway="gw", calls=events[3:])])
        await _publish(nc, events[:2])  # redelivered events are applied once
    finally:
        await nc.close()

    async def mine():
        r = await http.get("/api/v1/me/usage", headers=USER, params={"server": "weather"})
        body = r.json()
        maps = [s for s in body["servers"] if s["id"] == "maps"]
        return body if maps and maps[0]["calls"] == 6 and body["agents"] else None

    body = await wait_for(mine)
    maps = next(s for s in body["servers"] if s["id"] == "maps")
    assert maps == {"id": "maps", "used": 3, "limit": 1000, "remaining": 997, "calls": 6, "own_key": 2,
                    "in_agent_run": 1, "refused": 0, "plan": "free"}
    assert next(s for s in body["servers"] if s["id"] == "weather")["remaining"] == 1000
    assert body["agents"][0]["id"] == str(agent) and body["agents"][0]["calls"] == 1
    assert body["agents"][0]["limit"] == 100
    assert body["source"] == "redis" and body["zone"] == "Asia/Shanghai"

    async def per_day():
        # the other user's refused call is applied by a concurrent consumer: wait for all 7 events
        r = await http.get("/api/v1/usage/servers/maps", headers=ADMIN)
        days = r.json()["days"] if r.status_code == 200 else []
        return r.json() if days and days[0]["calls"] >= 7 else None

    report = await wait_for(per_day)
    (day,) = report["days"]
    assert day["day"] == body["day"]
    got = {k: day[k] for k in ("calls", "metered", "own_key", "in_agent_run", "refused", "users")}
    assert got == {"calls": 7, "metered": 3, "own_key": 2, "in_agent_run": 1, "refused": 1, "users": 2}
    assert report["global_used_today"] == 3
    assert is_problem(await http.get("/api/v1/usage/servers/maps", headers=USER), 403)

    page = (await http.post("/api/v1/usage/search", json={"page_size": 1}, headers=ADMIN)).json()
    assert (page["total"], page["page"], page["page_size"]) == (1, 1, 1)
    assert page["items"][0] == {"id": "maps", "calls": 7, "metered": 3, "own_key": 2, "in_agent_run": 1,
                                "refused": 1, "errors": 0, "users": 2}
    agents = (await http.post("/api/v1/usage/search", json={"kind": "agent", "day": body["day"]},
                              headers=ADMIN)).json()
    assert [a["id"] for a in agents["items"]] == [str(agent)]
    old = await http.post("/api/v1/usage/search", json={"day": "2020-01-01"}, headers=ADMIN)
    assert old.json()["total"] == 0
    assert is_problem(await http.post("/api/v1/usage/search", json={"page": 0}, headers=ADMIN), 422)
    assert is_problem(await http.post("/api/v1/usage/search", json={"kind": "tool"}, headers=ADMIN), 422)
    assert is_problem(await http.post("/api/v1/usage/search", json={}, headers=USER), 403)

    # Redis lost: the counters are gone, the history is not
    r = Redis.from_url(infra.redis_url)
    await r.flushdb()
    await r.aclose()
    again = (await http.get("/api/v1/usage/servers/maps", headers=ADMIN)).json()
    assert again["days"] == report["days"] and again["global_used_today"] == 0

    # Redis unreachable: /me/usage answers from the usage rows instead of failing
    live = app.state.runtime.extras["quota"]
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    app.state.runtime.extras["quota"] = QuotaClient(dead, live.policies)
    try:
        r = await http.get("/api/v1/me/usage", headers=USER)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["source"] == "database"
        assert next(s for s in body["servers"] if s["id"] == "maps")["used"] == 3
    finally:
        app.state.runtime.extras["quota"] = live
        await dead.aclose()


async def test_nats_request_reply_decides_on_the_same_counters(app, http, infra):
    r = await http.put("/api/v1/policies/servers/search", json={"per_user_daily": 3}, headers=ADMIN)
    assert r.status_code == 200
    quota = app.state.runtime.extras["quota"]
    await wait_for(lambda: _limit_is(app.state.runtime.extras["policy_cache"], "search", 3), timeout=5)
    nc = await nats.connect(infra.nats_url)
    responder = DecisionResponder(nc, quota, "test.ratelimit.decide")
    try:
        # the service itself answers no decisions on the bus (anyone there could spend a user's quota)
        user = uuid.uuid4()
        silent = await NatsQuotaClient(nc, "ratelimit.decide", timeout=0.3).decide(user, "server", "search")
        assert silent.reason == "unavailable" and not silent.allowed
        await responder.start()
        remote = NatsQuotaClient(nc, "test.ratelimit.decide")
        first = await remote.decide(user, "server", "search")
        assert (first.allowed, first.remaining, first.limit) == (True, 2, 3)
        assert (await quota.decide(user, "server", "search")).remaining == 1
        assert (await remote.decide(user, "server", "search")).remaining == 0
        refused = await remote.decide(user, "server", "search")
        assert not refused.allowed and refused.reason == "user_limit" and refused.retry_after > 0
        assert (await remote.decide(user, "server", "search", key_source="request")).reason == "own_key"
        with pytest.raises(InvalidSubject):
            await remote.decide(user, "server", "bad id")
        nobody = NatsQuotaClient(nc, "ratelimit.nobody-listens", timeout=0.2)
        down = await nobody.decide(user, "server", "search")
        assert not down.allowed and down.reason == "unavailable" and nobody.errors == 1
    finally:
        await responder.stop()
        await nc.close()


async def test_lost_snapshot_is_restored_and_stale_caches_reload(settings_for, infra):
    """Redis flushed (or replaced): the service writes the policy snapshot back, and a client whose
    pub/sub message was lost still converges by reloading when its copy is older than max age."""
    settings = settings_for(Settings, policy_max_age_seconds=0.4)
    async with running(SPEC, settings) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rl") as http:
            r = await http.put("/api/v1/policies/servers/slow", json={"per_user_daily": 9}, headers=ADMIN)
            assert r.status_code == 200
        redis = Redis.from_url(infra.redis_url)
        try:
            await redis.flushdb()
            assert await redis.get(SNAPSHOT_KEY) is None

            async def restored():
                raw = await redis.get(SNAPSHOT_KEY)
                return raw is not None and b'"slow"' in raw

            await wait_for(restored, timeout=5)
            # a client that never heard an announcement: its first look is the snapshot
            quota = await open_quota_client(redis, settings)
            try:
                assert quota.policies.limits("server", "slow").per_user_daily == 9
                # the service changes the snapshot behind its back, without announcing it
                await redis.set(SNAPSHOT_KEY, b'{"version": 1, "overrides": '
                                              b'[{"kind": "server", "id": "slow", "per_user_daily": 4}]}')

                async def reloaded():
                    await quota.decide(uuid.uuid4(), "server", "slow")  # a look schedules the reload
                    return quota.policies.limits("server", "slow").per_user_daily == 4

                await wait_for(reloaded, timeout=5)
            finally:
                await quota.aclose()
        finally:
            await redis.aclose()


async def test_my_usage_per_day_is_only_mine(app, http, infra):
    other = uuid.uuid4()
    quota = app.state.runtime.extras["quota"]
    today = quota.day().date
    events = [McpCallCompleted(user_id=USER_ID, server_slug="maps", method="tools/call", key_source="system",
                               latency_ms=5) for _ in range(2)]
    events += [McpCallCompleted(user_id=USER_ID, server_slug="weather", method="tools/call", key_source="vault",
                                metered=False, latency_ms=5)]
    events += [McpCallCompleted(user_id=other, server_slug="maps", method="tools/call", key_source="system",
                                latency_ms=5) for _ in range(5)]
    nc = await nats.connect(infra.nats_url)
    try:
        await _publish(nc, events)
    finally:
        await nc.close()
    # an older day, as the consumer would have written it
    from wemcp.ratelimit.repository import UsageRepository

    old = today.fromordinal(today.toordinal() - 3)
    async with app.state.runtime.sessions() as s, s.begin():
        await UsageRepository(s).add_many({(old, "server", "maps", USER_ID): dict(
            calls=4, metered=4, own_key=0, in_agent_run=0, refused=0, errors=1, latency_ms_sum=40.0)})

    async def mine():
        r = await http.get("/api/v1/me/usage/days", headers=USER)
        body = r.json()
        return body if r.status_code == 200 and body["days"][-1]["calls"] == 3 else None

    body = await wait_for(mine)
    assert len(body["days"]) == 30 and body["until"] == today.isoformat() and body["zone"] == "Asia/Shanghai"
    assert [d["day"] for d in body["days"]] == sorted(d["day"] for d in body["days"])
    assert body["days"][-1] == {"day": today.isoformat(), "calls": 3, "metered": 2, "own_key": 1,
                                "in_agent_run": 0, "refused": 0, "errors": 0}
    assert body["days"][-4]["day"] == old.isoformat() and body["days"][-4]["calls"] == 4
    assert sum(d["calls"] for d in body["days"]) == 7  # the other user's five calls are not mine

    async def theirs():
        r = (await http.get("/api/v1/me/usage/days", params={"days": 1},
                            headers=PlatformHeaders("ratelimit", Identity(other, "user"), issuer="gateway"))).json()
        return r if r["days"][0]["calls"] == 5 else None

    assert len((await wait_for(theirs))["days"]) == 1
    # nobody signed in, a forged user header, bad ranges: clean problems
    assert is_problem(await http.get("/api/v1/me/usage/days"), 401)
    assert is_problem(await http.get("/api/v1/me/usage/days", headers={"x-wemcp-user-id": str(other)}), 401)
    assert is_problem(await http.get("/api/v1/me/usage/days?days=0", headers=USER), 422)
    assert is_problem(await http.get("/api/v1/me/usage/days?days=367", headers=USER), 422)
    # no way to name another user
    r = await http.get(f"/api/v1/me/usage/days?user_id={other}", headers=USER)
    assert sum(d["calls"] for d in r.json()["days"]) == 7


async def test_usage_of_an_agent_has_no_global_cap(http):
    """A global daily cap is a server's: the usage report of an agent leaves its fields out (not null)."""
    common = {"kind", "id", "since", "until", "zone", "per_user_daily", "days"}
    agent = (await http.get(f"/api/v1/usage/agents/{uuid.uuid4()}", headers=ADMIN)).json()
    assert set(agent) == common and agent["kind"] == "agent" and agent["days"] == []
    server = (await http.get("/api/v1/usage/servers/maps", headers=ADMIN)).json()
    assert set(server) == common | {"global_daily_cap", "global_used_today"}
    assert server["global_daily_cap"] is None and server["global_used_today"] == 0
