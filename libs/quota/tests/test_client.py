"""The quota decision (wemcp.quota.client) against a real Redis."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis

from wemcp.devstack.infra import free_port
from wemcp.quota.client import InvalidSubject, QuotaClient
from wemcp.quota.policy import Override, StaticPolicies
from wemcp.quota.runcontext import sign_run_context

pytestmark = pytest.mark.usefixtures("clean_redis")

SECRET = "test-agent-run-secret-0123456789"
SHANGHAI = ZoneInfo("Asia/Shanghai")


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis(infra):
    r = Redis.from_url(infra.redis_url)
    yield r
    await r.aclose()


def client(redis, policies=None, **kw) -> QuotaClient:
    # a generous timeout: a burst of 100 callers opens 100 connections on a busy 2-core test machine
    kw.setdefault("timeout", 5.0)
    return QuotaClient(redis, policies or StaticPolicies(), run_context_secret=SECRET, **kw)


async def test_200_callers_in_two_processes_against_limit_100_admit_exactly_100(infra, redis):
    user, server = str(uuid.uuid4()), "amap-maps"
    worker = Path(__file__).with_name("decide_worker.py")
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, str(worker), infra.redis_url, user, server, "100", "100",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE) for _ in range(2)]
    try:
        for p in procs:  # both processes connected before either starts
            assert (await asyncio.wait_for(p.stdout.readline(), 30)).strip() == b"ready"
        for p in procs:
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        outs = [json.loads(await asyncio.wait_for(p.stdout.readline(), 30)) for p in procs]
    finally:
        for p in procs:
            if p.returncode is None:
                await p.wait()
    remaining = [r for o in outs for r in o["remaining"]]
    assert len(remaining) == 100, outs
    assert sum(o["refused"] for o in outs) == 100
    # every unit was handed out exactly once: the allowed calls saw remaining 99, 98, ..., 0
    assert sorted(remaining) == list(range(100))
    assert {r for o in outs for r in o["reasons"]} == {"counted", "user_limit"}
    key = QuotaClient.counter_key("server", server, client(redis).day().tag, user)
    assert int(await redis.get(key)) == 100  # refusals consume nothing


async def test_day_rolls_over_at_midnight_in_the_configured_zone(redis):
    clock = Clock(datetime(2026, 3, 9, 23, 59, 58, tzinfo=SHANGHAI))
    q = client(redis, StaticPolicies(server_daily=2), clock=clock)
    user = uuid.uuid4()
    first = await q.decide(user, "server", "weather")
    assert (first.allowed, first.remaining) == (True, 1)
    assert first.reset_at == datetime(2026, 3, 10, 0, 0, tzinfo=SHANGHAI)
    assert (await q.decide(user, "server", "weather")).remaining == 0
    refused = await q.decide(user, "server", "weather")
    assert not refused.allowed and refused.reason == "user_limit"
    assert refused.retry_after == 2  # two seconds to midnight in Shanghai
    clock.now += 1.5  # 23:59:59.5 — still the same day
    assert not (await q.decide(user, "server", "weather")).allowed
    clock.now += 0.5  # 00:00:00 in Shanghai (16:00 UTC): a new day
    fresh = await q.decide(user, "server", "weather")
    assert (fresh.allowed, fresh.remaining, fresh.used) == (True, 1, 1)
    assert fresh.reset_at == datetime(2026, 3, 11, 0, 0, tzinfo=SHANGHAI)
    # yesterday's counter expires an hour after its day ended, not never
    ttl = await redis.ttl(QuotaClient.counter_key("server", "weather", "20260309", str(user)))
    assert 0 < ttl <= 3600 + 2 + 5


async def test_zone_is_configurable(redis):
    at = datetime(2026, 3, 9, 16, 30, tzinfo=ZoneInfo("UTC"))  # 00:30 next day in Shanghai
    shanghai = client(redis, clock=Clock(at))
    utc = client(redis, clock=Clock(at), zone="UTC")
    assert shanghai.day().tag == "20260310" and utc.day().tag == "20260309"
    d = await utc.decide(uuid.uuid4(), "server", "x")
    assert d.reset_at == datetime(2026, 3, 10, tzinfo=ZoneInfo("UTC"))


async def test_own_key_calls_are_unmetered(redis):
    q = client(redis, StaticPolicies(server_daily=1))
    user = uuid.uuid4()
    assert (await q.decide(user, "server", "github")).allowed
    assert not (await q.decide(user, "server", "github")).allowed
    for source in ("request", "vault", "oauth"):
        d = await q.decide(user, "server", "github", key_source=source)
        assert d.allowed and d.reason == "own_key" and not d.counted and d.limit is None
    key = QuotaClient.counter_key("server", "github", q.day().tag, str(user))
    assert int(await redis.get(key)) == 1


async def test_agent_run_context_is_not_counted_and_bad_ones_are_counted(redis):
    clock = Clock(datetime(2026, 5, 1, 12, 0, tzinfo=SHANGHAI))
    q = client(redis, StaticPolicies(server_daily=4), clock=clock)
    user, agent = uuid.uuid4(), uuid.uuid4()
    key = QuotaClient.counter_key("server", "search", q.day().tag, str(user))
    token = sign_run_context(SECRET, user_id=user, agent_id=agent, run_id="run-1", ttl_seconds=60,
                             servers=["search", "maps"], now=clock.now)
    for _ in range(10):
        d = await q.decide(user, "server", "search", in_agent_run_token=token)
        assert d.allowed and d.reason == "agent_run" and not d.counted
    assert await redis.get(key) is None  # not a single unit consumed

    forged = sign_run_context("another-secret-not-ours-000000", user_id=user, agent_id=agent, run_id="r",
                              servers=["search"], now=clock.now)
    other_users = sign_run_context(SECRET, user_id=uuid.uuid4(), agent_id=agent, run_id="r", servers=["search"],
                                   now=clock.now)
    # the context covers the agent's own servers only: a tool added to the run is counted
    elsewhere = await q.decide(user, "server", "weather", in_agent_run_token=token)
    assert elsewhere.counted and elsewhere.run_context_error == "other_server"
    unscoped = sign_run_context(SECRET, user_id=user, agent_id=agent, run_id="r", now=clock.now)
    assert (await q.decide(user, "agent", str(agent), in_agent_run_token=token)).counted
    head, payload, sig = token.split(".")
    tampered = f"{head}.{payload[:-2]}AA.{sig}"
    expected = {forged: "bad_signature", other_users: "wrong_user", tampered: "bad_signature",
                unscoped: "other_server"}
    for bad, why in expected.items():
        d = await q.decide(user, "server", "search", in_agent_run_token=bad)
        assert d.counted and d.reason == "counted" and d.run_context_error == why
    assert int(await redis.get(key)) == 4
    clock.now += 61  # the genuine token has expired: counted like any call, and refused now
    d = await q.decide(user, "server", "search", in_agent_run_token=token)
    assert not d.allowed and d.reason == "user_limit" and d.run_context_error == "expired"
    assert q.stats.run_context_rejected == 7


async def test_101st_agent_call_is_refused_with_retry_after_and_a_readable_message(redis):
    clock = Clock(datetime(2026, 5, 1, 21, 30, tzinfo=SHANGHAI))
    q = client(redis, clock=clock)  # default: 100 per (user, agent, day)
    user, agent = uuid.uuid4(), str(uuid.uuid4())
    decisions = await asyncio.gather(*(q.decide(user, "agent", agent) for _ in range(100)))
    assert all(d.allowed for d in decisions)
    assert sorted(d.remaining for d in decisions) == list(range(100))
    refused = await q.decide(user, "agent", agent)
    assert not refused.allowed and refused.reason == "user_limit"
    assert refused.limit == 100 and refused.remaining == 0
    assert refused.retry_after == 2 * 3600 + 30 * 60
    assert "all 100 free calls" in refused.message and "2026-05-02 00:00 Asia/Shanghai" in refused.message
    assert "in 2h30m" in refused.message
    assert refused.headers()["Retry-After"] == str(2 * 3600 + 30 * 60)
    problem = refused.problem()
    assert problem["status"] == 429 and problem["detail"] == refused.message
    assert refused.jsonrpc_error()["message"] == refused.message
    # another user's quota for the same agent is untouched
    assert (await q.decide(uuid.uuid4(), "agent", agent)).remaining == 99


async def test_global_server_cap_protects_the_providers_quota(redis):
    policies = StaticPolicies(server_daily=10, overrides=[("server", "maps", Override(global_daily_cap=3))])
    q = client(redis, policies)
    users = [uuid.uuid4() for _ in range(4)]
    assert [(await q.decide(u, "server", "maps")).allowed for u in users] == [True, True, True, False]
    capped = await q.decide(users[3], "server", "maps")
    assert capped.reason == "global_cap" and capped.retry_after
    assert "platform-wide daily limit of 3" in capped.message
    assert (await q.decide(users[3], "server", "other")).allowed  # the cap is per server
    assert await q.global_used_today("maps") == 3


async def test_a_zero_limit_refuses_with_its_own_message(redis):
    q = client(redis, StaticPolicies(overrides=[("server", "paid-only", Override(per_user_daily=0))]))
    d = await q.decide(uuid.uuid4(), "server", "paid-only")
    assert not d.allowed and d.reason == "user_limit" and d.retry_after
    assert "offers no free calls" in d.message
    assert (await q.decide(uuid.uuid4(), "server", "paid-only", key_source="request")).allowed


async def test_unreachable_redis_fails_closed_by_default_and_open_when_configured(redis):
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    try:
        closed = client(dead)
        d = await closed.decide(uuid.uuid4(), "server", "maps")
        assert not d.allowed and d.reason == "unavailable" and d.retry_after == 5
        assert d.problem()["status"] == 503
        assert closed.stats.redis_errors == 1
        # own-key calls never needed Redis
        assert (await closed.decide(uuid.uuid4(), "server", "maps", key_source="vault")).allowed
        opened = client(dead, fail_closed=False)
        d = await opened.decide(uuid.uuid4(), "server", "maps")
        assert d.allowed and d.reason == "unavailable" and not d.counted
        assert opened.stats.redis_errors == 1
    finally:
        await dead.aclose()


async def test_invalid_subjects_are_rejected_before_redis(redis):
    q = client(redis)
    for kind, sid in (("server", ""), ("server", "a b"), ("server", "x{y}"), ("tool", "x"), ("agent", "-x")):
        with pytest.raises(InvalidSubject):
            await q.decide(uuid.uuid4(), kind, sid)
    assert await redis.dbsize() == 0


async def test_concurrent_decisions_share_pipelines_and_each_counts_exactly_once(redis):
    q = client(redis, StaticPolicies(server_daily=150))
    user = uuid.uuid4()
    out = await asyncio.gather(*(q.decide(user, "server", "batched") for _ in range(200)))
    assert sorted(d.remaining for d in out if d.allowed) == list(range(150))
    assert sum(not d.allowed for d in out) == 50
    # 200 decisions in one loop iteration: far fewer pipelines than decisions, several per pipeline
    assert q._script.batches < 20 and q._script.largest >= 16, (q._script.batches, q._script.largest)
    key = QuotaClient.counter_key("server", "batched", q.day().tag, str(user))
    assert int(await redis.get(key)) == 150


async def test_a_flushed_script_cache_is_reloaded_and_nothing_is_counted_twice(redis):
    q = client(redis)
    user = uuid.uuid4()
    assert (await q.decide(user, "server", "flushy")).used == 1
    for size in (1, 30):  # the lone call and the pipelined batch each meet NOSCRIPT once
        await redis.script_flush()
        out = await asyncio.gather(*(q.decide(user, "server", "flushy") for _ in range(size)))
        assert all(d.allowed and d.reason == "counted" for d in out)
    key = QuotaClient.counter_key("server", "flushy", q.day().tag, str(user))
    assert int(await redis.get(key)) == 1 + 1 + 30


async def test_a_caller_that_timed_out_leaves_the_others_of_its_batch_answered(redis):
    q = client(redis)
    user = uuid.uuid4()
    slow = asyncio.ensure_future(q.decide(user, "server", "timeouts"))
    rest = [asyncio.ensure_future(q.decide(user, "server", "timeouts")) for _ in range(9)]
    await asyncio.sleep(0)  # all ten are now waiting on the batch, which is not sent yet
    assert len(q._script._pending) == 10
    slow.cancel()  # gives up (as its timeout would) before the batch goes out
    done = await asyncio.gather(*rest)
    assert sorted(d.used or 0 for d in done) == list(range(1, 10))
    assert slow.cancelled()
    key = QuotaClient.counter_key("server", "timeouts", q.day().tag, str(user))
    assert int(await redis.get(key)) == 9  # the one that gave up consumed nothing


async def test_decide_ahead_only_far_from_the_limit_and_exact_in_one_process(redis):
    q = client(redis, StaticPolicies(server_daily=100), ahead_margin=10)
    user = uuid.uuid4()
    assert q.decide_ahead(user, "server", "ahead") is None  # nothing known yet: decide first
    first = await q.decide(user, "server", "ahead")
    assert first.remaining == 99
    assert q.decide_ahead(user, "server", "ahead", key_source="vault") is None  # unmetered anyway
    assert q.decide_ahead(user, "server", "ahead", in_agent_run_token="t") is None
    decisions, ahead = [first], []
    while True:  # as the gateway does: ahead when it may, else the decision before the call
        fut = q.decide_ahead(user, "server", "ahead")
        batch = [fut] if fut is not None else []
        while fut is not None and len(batch) < 20:  # many in flight at once, as under load
            fut = q.decide_ahead(user, "server", "ahead")
            if fut is not None:
                batch.append(fut)
        if batch:
            ahead += await asyncio.gather(*batch)
            continue
        d = await q.decide(user, "server", "ahead")
        decisions.append(d)
        if not d.allowed:
            break
    allowed = [d for d in decisions + ahead if d.allowed]
    assert sorted(d.remaining for d in allowed) == list(range(100))  # each unit once, none over
    # most went ahead, all of them allowed and none closer to the limit than the margin allows
    assert len(ahead) >= 80 and all(d.allowed for d in ahead) and min(d.remaining for d in ahead) >= 10 - 1
    assert not decisions[-1].allowed and decisions[-1].reason == "user_limit"
    assert q._ahead == {}
    key = QuotaClient.counter_key("server", "ahead", q.day().tag, str(user))
    assert int(await redis.get(key)) == 100


async def test_decide_ahead_needs_a_fresh_count_and_never_with_a_global_cap(redis):
    q = client(redis, StaticPolicies(server_daily=1000), ahead_margin=5, ahead_seconds=0.2)
    user = uuid.uuid4()
    await q.decide(user, "server", "fresh")
    fut = q.decide_ahead(user, "server", "fresh")
    assert fut is not None and (await fut).remaining == 998
    await asyncio.sleep(0.25)
    assert q.decide_ahead(user, "server", "fresh") is None  # the count is too old: decide first
    capped = client(redis, StaticPolicies(server_daily=1000, server_global_cap=10_000), ahead_margin=5)
    await capped.decide(user, "server", "capped")
    assert capped.decide_ahead(user, "server", "capped") is None
