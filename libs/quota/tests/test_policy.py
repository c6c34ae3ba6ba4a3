"""The pure parts of the quota library: policy resolution, entitlements, the snapshot's JSON, the
decision's shapes, key names and the quota day (no Redis)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from wemcp.quota.client import Decision, QuotaClient, _fmt_wait
from wemcp.quota.config import QuotaSettings
from wemcp.quota.policy import Limits, Override, PolicySet, StaticPolicies


def test_overrides_inherit_what_they_leave_unset():
    ps = PolicySet(defaults={"server": Limits(1000, 50_000), "agent": Limits(100)},
                   overrides={("server", "maps"): Override(per_user_daily=5),
                              ("server", "big"): Override(global_daily_cap=7)})
    assert ps.limits("server", "maps") == Limits(5, 50_000)
    assert ps.limits("server", "big") == Limits(1000, 7)
    assert ps.limits("server", "other") == Limits(1000, 50_000)
    assert ps.limits("agent", "a1") == Limits(100, None)
    with pytest.raises(KeyError):
        ps.limits("tool", "x")


def test_entitlements_hold_until_they_expire():
    ps = PolicySet(defaults={"server": Limits(10), "agent": Limits(1)},
                   entitlements={("server", "maps", "u1"): (500, 2000.0), ("agent", "a", "u1"): (None, None)})
    assert ps.entitlement("server", "maps", "u1", now=1999) == (True, 500)
    assert ps.entitlement("server", "maps", "u1", now=2000) == (False, None)  # expired at its time
    assert ps.entitlement("server", "maps", "u2", now=0) == (False, None)
    assert ps.entitlement("agent", "a", "u1", now=10**12) == (True, None)  # unlimited, no expiry
    assert PolicySet(defaults={}).entitlement("server", "maps", "u1", 0) == (False, None)


def test_snapshot_json_round_trip_and_unknown_kinds_dropped():
    ps = PolicySet(defaults={"server": Limits(3, 9), "agent": Limits(None)}, version=7,
                   overrides={("server", "maps"): Override(1, None)},
                   entitlements={("server", "maps", "u1"): (40, 1.5)})
    back = PolicySet.from_json(ps.to_json(), {"server": Limits(1000), "agent": Limits(100)})
    assert (back.defaults, back.overrides, back.entitlements, back.version) == (
        ps.defaults, ps.overrides, ps.entitlements, 7)
    odd = ('{"defaults": {"tool": {"per_user_daily": 1}}, "overrides": [{"kind": "tool", "id": "x"}],'
           ' "entitlements": [{"kind": "tool", "id": "x", "user": "u"}]}')
    fallback = {"server": Limits(1000), "agent": Limits(100)}
    got = PolicySet.from_json(odd, fallback)
    assert got.defaults == fallback and not got.overrides and not got.entitlements and got.version == 0


def test_static_policies():
    sp = StaticPolicies(5, 2, server_global_cap=9, overrides=[("server", "x", Override(1))],
                        entitlements={("server", "x", "u"): (3, None)})
    assert sp.limits("server", "y") == Limits(5, 9) and sp.limits("server", "x") == Limits(1, 9)
    assert sp.limits("agent", "a") == Limits(2) and sp.entitlement("server", "x", "u", 0) == (True, 3)


def _decision(**kw) -> Decision:
    base = dict(allowed=False, reason="user_limit", limit=10, remaining=0,
                reset_at=datetime(2026, 12, 3, 0, 0, tzinfo=ZoneInfo("Asia/Shanghai")), retry_after=60,
                message="used up", counted=False, used=10, run_context_error="expired")
    return Decision(**{**base, **kw})  # type: ignore[arg-type]


def test_decision_shapes():
    d = _decision()
    assert d.headers() == {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0",
                           "X-RateLimit-Reset": str(int(d.reset_at.timestamp())), "Retry-After": "60"}
    p = d.problem()
    assert (p["status"], p["type"], p["reason"]) == (429, "https://wemcp.dev/problems/user-limit", "user_limit")
    assert d.jsonrpc_error()["code"] == -32029
    down = _decision(reason="unavailable", limit=None, remaining=None)
    assert down.problem()["status"] == 503 and down.jsonrpc_error()["code"] == -32030
    assert down.headers() == {"Retry-After": "60"}
    assert _decision(allowed=True, limit=None, retry_after=None).headers() == {}
    assert Decision.from_wire(d.to_wire()) == d


def test_key_names_and_waits():
    assert QuotaClient.counter_key("server", "maps", "20261202", "u") == "ratelimit:count:{server:maps}:20261202:u"
    assert QuotaClient.cap_key("server", "maps", "20261202") == "ratelimit:cap:{server:maps}:20261202"
    assert [_fmt_wait(s) for s in (0, 59, 61, 3600, 3660 + 59)] == ["1m", "1m", "1m", "1h00m", "1h01m"]


def test_the_day_ends_at_midnight_in_the_zone():
    at = datetime(2026, 12, 2, 15, 59, 59, tzinfo=UTC)  # 23:59:59 in Shanghai
    client = QuotaClient(redis=None, policies=StaticPolicies(), clock=at.timestamp)  # type: ignore[arg-type]
    day = client.day()
    assert day.tag == "20261202" and day.reset_at == datetime(2026, 12, 3, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert client.day(at.timestamp() + 1).tag == "20261203"
    utc = QuotaClient(redis=None, policies=StaticPolicies(), zone="UTC", clock=at.timestamp)  # type: ignore[arg-type]
    assert utc.day().tag == "20261202" and utc.day().end - at.timestamp() == 8 * 3600 + 1


def test_settings_defaults_and_validation():
    s = QuotaSettings()
    assert s.default_limits() == {"server": Limits(1000, None), "agent": Limits(100, None)}
    with pytest.raises(ValueError):
        QuotaSettings(day_zone="Mars/Olympus")
