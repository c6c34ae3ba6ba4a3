"""Signed agent-run contexts."""

from __future__ import annotations

import uuid

import pytest

from wemcp.ratelimit.runcontext import InvalidRunContext, sign_run_context, verify_run_context

SECRET = "s" * 32


def test_round_trip_and_binding_to_the_user():
    user, agent = uuid.uuid4(), uuid.uuid4()
    token = sign_run_context(SECRET, user_id=user, agent_id=agent, run_id="r1", servers=["b", "a", "a"],
                             ttl_seconds=10, now=1000)
    ctx = verify_run_context(token, SECRET, user_id=user, now=1009)
    assert (ctx.user_id, ctx.agent_id, ctx.run_id, ctx.expires_at) == (str(user), str(agent), "r1", 1010)
    assert ctx.servers == {"a", "b"}
    with pytest.raises(InvalidRunContext) as e:
        verify_run_context(token, SECRET, user_id=uuid.uuid4(), now=1009)
    assert e.value.reason == "wrong_user"
    with pytest.raises(InvalidRunContext) as e:
        verify_run_context(token, SECRET, now=1010)
    assert e.value.reason == "expired"


@pytest.mark.parametrize("token,reason", [
    ("", "malformed"), ("v1.abc", "malformed"), ("v2.a.b", "malformed"), ("v1.a.!!!", "malformed"),
    ("v1.eyJ1IjoxfQ.AAAA", "bad_signature"), ("x" * 5000, "malformed"),
])
def test_garbage_is_rejected(token, reason):
    with pytest.raises(InvalidRunContext) as e:
        verify_run_context(token, SECRET, now=0)
    assert e.value.reason == reason


def test_sixteen_long_server_slugs_fit_and_no_list_covers_nothing():
    servers = [f"{i:02d}" + "s" * 98 for i in range(16)]  # the agents service's limits: 16 refs, 100 chars
    token = sign_run_context(SECRET, user_id="u", agent_id=str(uuid.uuid4()), run_id=uuid.uuid4().hex,
                             servers=servers)
    assert verify_run_context(token, SECRET).servers == set(servers)
    assert verify_run_context(sign_run_context(SECRET, user_id="u", agent_id="a", run_id="r"), SECRET).servers == set()


def test_no_secret_accepts_nothing():
    token = sign_run_context(SECRET, user_id="u", agent_id="a", run_id="r")
    with pytest.raises(InvalidRunContext) as e:
        verify_run_context(token, "")
    assert e.value.reason == "no_secret"
