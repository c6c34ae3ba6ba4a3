"""The MCP connection pool (issue #8), end to end: the real gateway → agents → the stand-in MCP
router (behind a TCP relay that counts and breaks connections) → ``mcp-server-time``.

What is proved: a second request reuses the connection and the tool list (no initialize, no
discover, no tools/list); users, credentials and run scopes never share an entry or a connection;
agent runs carry their own run context on every call and plain completions none; a dead pooled
connection is replaced once, a new one never retried; a disabled server is not served from the
cache for long; the pool is bounded, reaps idle entries and closes on shutdown."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import httpx2 as httpx
import pytest

from services.agents.tests.agents_testkit import legacy_server, wait_for
from services.agents.tests.test_api_agents import make_agent
from services.agents.tests.test_api_chat_completions import TIME_Q, TIME_TOOL, check_time_answer
from wemcp.agents.mcp_pool import McpPool
from wemcp.devstack.testing import serve_app
from wemcp.quota.runcontext import verify_run_context
from wemcp.testkit.agents import EXTERNAL_KEY, RUN_SECRET


def pool(p: Any) -> McpPool:
    return p.app.state.runtime.extras["agents"].pool


async def chat(p: Any, content: str, *, token: str | None = None, tools: list[dict[str, Any]] | None = None,
               **extra: Any) -> httpx.Response:
    return await p.http.post("/v1/chat/completions", headers={"Authorization": f"Bearer {token or p.user_token}"},
                             json={"model": "scripted-1", "messages": [{"role": "user", "content": content}],
                                   "tools": [TIME_TOOL] if tools is None else tools, **extra})


def methods(p: Any, since: int = 0) -> list[str | None]:
    return [r["method"] for r in p.router.requests[since:]]


async def test_second_request_reuses_the_connection_and_the_tool_list(platform):
    p = platform
    await p.add_provider()
    first = await chat(p, TIME_Q)
    assert first.status_code == 200, first.text
    check_time_answer(first.json()["choices"][0]["message"]["content"])
    # stateless 2026-07-28 from the first request: no initialize, no server/discover probe
    assert methods(p) == ["tools/list", "tools/call", "tools/call"]
    assert {r["version"] for r in p.router.requests} == {"2026-07-28"}
    n = len(p.router.requests)
    second = await chat(p, TIME_Q)
    assert second.status_code == 200, second.text
    check_time_answer(second.json()["choices"][0]["message"]["content"])
    assert methods(p, n) == ["tools/call", "tools/call"]  # the tool list came from the pool
    # ... and every request of both went over one TCP connection
    assert p.proxy.accepted == 1 and len({r["port"] for r in p.router.requests}) == 1
    [entry] = pool(p).entries()
    assert (entry.listed, entry.reused, entry.users) == (1, 1, 0)


async def test_two_users_never_share_a_pooled_entry(platform):
    p = platform
    await p.add_provider()
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    tokens = {alice: p.jwks.token(uuid.UUID(alice), login="alice"), bob: p.jwks.token(uuid.UUID(bob), login="bob")}
    for user in (alice, bob, alice, bob):
        r = await chat(p, TIME_Q, token=tokens[user])
        assert r.status_code == 200, r.text
    rs = await asyncio.gather(*(chat(p, TIME_Q, token=tokens[u]) for u in (alice, bob, alice, bob, alice, bob)))
    assert [r.status_code for r in rs] == [200] * 6
    reqs = p.router.requests
    # every request carried one user's own identity and credentials ...
    assert {r["user"] for r in reqs} == {alice, bob}
    for r in reqs:
        assert r["authorization"] == f"Bearer {tokens[r['user']]}", r
    assert Counter(r["user"] for r in reqs if r["method"] == "tools/call") == {alice: 10, bob: 10}
    # ... and no TCP connection was ever used for both users
    users_by_port: dict[int, set[str]] = {}
    for r in reqs:
        users_by_port.setdefault(r["port"], set()).add(r["user"])
    assert all(len(users) == 1 for users in users_by_port.values()), users_by_port
    # one entry each, each listing its own tools
    entries = pool(p).entries()
    assert len(entries) == 2
    lists = Counter(r["user"] for r in reqs if r["method"] == "tools/list")
    assert set(lists) == {alice, bob} and sum(lists.values()) == sum(e.listed for e in entries)


async def test_other_credentials_of_the_same_user_get_their_own_entry(platform):
    p = platform
    await p.add_provider()
    other_login = p.jwks.token(p.user_id, login="second-session")  # another Authorization, same user
    asks = [(None, None), (other_login, None), (None, "key-1"), (None, "key-2"), (None, "key-1")]
    for token, key in asks:
        tool = {**TIME_TOOL, **({"headers": {"X-Upstream-Authorization": key}} if key else {})}
        r = await chat(p, "hello", token=token, tools=[tool])
        assert r.status_code == 200, r.text
    lists = [(r["authorization"], r["upstream_key"]) for r in p.router.requests if r["method"] == "tools/list"]
    # four different sets of credentials, four lists; the fifth request reused key-1's entry
    assert lists == [(f"Bearer {p.user_token}", None), (f"Bearer {other_login}", None),
                     (f"Bearer {p.user_token}", "key-1"), (f"Bearer {p.user_token}", "key-2")]
    assert len(pool(p)) == 4 and p.proxy.accepted == 4
    ports = {}
    for r in p.router.requests:
        ports.setdefault(r["port"], set()).add((r["authorization"], r["upstream_key"]))
    assert all(len(creds) == 1 for creds in ports.values())


async def test_agent_runs_carry_their_own_run_context_and_plain_completions_none(platform):
    p = platform
    await p.add_provider()
    a = await make_agent(p)
    url = f"/v1/agents/{a['id']}/chat/completions"
    body = {"messages": [{"role": "user", "content": TIME_Q}]}
    plain1 = await chat(p, TIME_Q)
    run1 = await p.http.post(url, headers=p.auth(), json=body)
    run2 = await p.http.post(url, headers=p.auth(), json=body)
    plain2 = await chat(p, TIME_Q)
    for r in (plain1, run1, run2, plain2):
        assert r.status_code == 200, r.text
        check_time_answer(r.json()["choices"][0]["message"]["content"])
    seen = p.router.seen
    assert len(seen) == 8
    # plain completions: no context, counted against the server; agent runs: a valid context, not counted
    assert [(s["run_token"] is None, s["reason"] == "agent_run", s["counted"]) for s in seen] == \
        [(True, False, True)] * 2 + [(False, True, False)] * 4 + [(True, False, True)] * 2
    contexts = [verify_run_context(s["run_token"], RUN_SECRET, user_id=p.user_id) for s in seen[2:6]]
    assert {c.agent_id for c in contexts} == {a["id"]}
    # each run's own context on each of its calls, although the second run reused the first one's entry
    assert contexts[0].run_id == contexts[1].run_id != contexts[2].run_id == contexts[3].run_id
    lists = [r for r in p.router.requests if r["method"] == "tools/list"]
    assert [r["run_token"] is not None for r in lists] == [False, True]  # one for chat, one for the agent
    assert len(pool(p)) == 2
    plain_ports = {s["port"] for s in seen[:2] + seen[6:]}
    agent_ports = {s["port"] for s in seen[2:6]}
    assert plain_ports.isdisjoint(agent_ports)  # plain chat and the agent never share a connection
    quota = p.router.quota
    assert await quota.used_today(p.user_id, [("server", "time"), ("agent", a["id"])]) == [4, 2]


async def test_dead_pooled_connection_is_replaced_once_and_a_new_one_never_retried(platform):
    p = platform
    await p.add_provider()
    assert (await chat(p, TIME_Q)).status_code == 200
    assert p.proxy.accepted == 1
    p.proxy.kill_idle()  # the pooled connection is dead, and nothing tells the client
    r = await chat(p, TIME_Q)
    assert r.status_code == 200, r.text
    check_time_answer(r.json()["choices"][0]["message"]["content"])
    assert [c["status"] for c in r.json()["mcp_calls"]] == ["ok", "ok"]
    # the dead connection swallowed one request, which went again on one new connection
    assert (p.proxy.swallowed, p.proxy.accepted) == (1, 2)
    assert p.upstream.calls == ["get_current_time", "convert_time"] * 2  # each call ran once
    assert pool(p).entries()[0].replaced == 1
    # a request that fails on a connection just opened is the server's answer: not sent again
    p.proxy.dead_on_arrival = True
    r = await chat(p, TIME_Q, token=p.jwks.token(uuid.uuid4()))
    assert r.status_code == 502 and r.json()["error"]["code"] == "mcp_unavailable", r.text
    assert (p.proxy.swallowed, p.proxy.accepted) == (2, 3)


@pytest.mark.parametrize("platform", [{"mcp_tools_ttl_seconds": 1.0}], indirect=True)
async def test_disabled_server_is_not_served_from_the_cache_past_its_ttl(platform):
    p = platform
    await p.add_provider()
    assert (await chat(p, "hello")).status_code == 200  # lists the tools; the model calls none
    p.router.disabled.add("time")
    t0 = time.monotonic()

    async def refused() -> httpx.Response | None:
        r = await chat(p, "hello")
        return r if r.status_code == 400 else None

    r = await wait_for(refused, timeout=10)
    assert r.json()["error"]["code"] == "mcp_unauthorized" and "(403)" in r.json()["detail"]
    assert time.monotonic() - t0 < 1.0 + 2.0  # the TTL, plus a request or two


async def test_a_refused_call_drops_the_cached_tool_list(platform):
    p = platform
    await p.add_provider()
    assert (await chat(p, "hello")).status_code == 200
    p.router.disabled.add("time")
    # within the 5 s TTL the tools are still offered; the model's call is refused by the router
    r = await chat(p, "LOOP", max_tool_rounds=1)
    assert r.status_code == 422, r.text
    [call] = r.json()["mcp_calls"]
    assert call["status"] == "error" and call["tool"] == "get_current_time"
    n = len(p.router.requests)
    r = await chat(p, "hello")  # at once: listed again and refused before the model is asked
    assert r.status_code == 400 and r.json()["error"]["code"] == "mcp_unauthorized", r.text
    assert methods(p, n) == ["tools/list"]


async def test_server_url_servers_are_pooled_too_2025_ones_with_a_session_per_request(platform):
    p = platform
    await p.add_provider()
    seen: list[str] = []
    add_q = "ADD two and forty"
    async with serve_app(legacy_server(seen), lifespan="on") as legacy_url:
        for _ in range(2):
            for url in (p.external, legacy_url + "/mcp"):
                tool = {"type": "mcp", "server_url": url, "server_label": "calc",
                        "headers": {"X-Api-Key": EXTERNAL_KEY}}
                r = await chat(p, add_q, tools=[tool])
                assert r.status_code == 200, r.text
                assert r.json()["choices"][0]["message"]["content"] == "The sum is 42."
    modern, legacy = sorted(pool(p).entries(), key=lambda e: e.url != p.external)
    # the 2026-07-28 server: probed once, then pinned; listed once
    assert (modern.mode, modern.listed, modern.reused) == ("2026-07-28", 1, 1)
    # the 2025 server: the probe failed once; a session per request, the tool list once
    assert (legacy.mode, legacy.listed, legacy.reused) == ("legacy", 1, 1)
    assert seen.count("server/discover") == 1 and seen.count("initialize") == 2
    assert seen.count("tools/list") == 1 and seen.count("tools/call") == 2


@pytest.mark.parametrize("platform", [{"mcp_pool_max_entries": 2, "mcp_pool_idle_seconds": 2.0}], indirect=True)
async def test_pool_is_bounded_and_reaps_idle_entries(platform):
    p = platform
    await p.add_provider()
    mp = pool(p)
    entries = []
    for _ in range(3):
        r = await chat(p, "hello", token=p.jwks.token(uuid.uuid4()))
        assert r.status_code == 200, r.text
        entries.append(next(e for e in mp.entries() if e not in entries))
    assert len(mp) == 2 and mp.entries() == entries[1:]
    await wait_for(lambda: entries[0].closed, timeout=2)  # the least recently used one, with its connection
    await wait_for(lambda: p.proxy.open == 2, timeout=2)
    # unused for mcp_pool_idle_seconds: closed (the server itself would keep them 5 s)
    await wait_for(lambda: len(mp) == 0 and all(e.closed for e in entries), timeout=4)
    await wait_for(lambda: p.proxy.open == 0, timeout=1)


async def test_pool_closes_its_connections_on_shutdown(platform):
    p = platform
    await p.add_provider()
    for _ in range(2):
        assert (await chat(p, "hello", token=p.jwks.token(uuid.uuid4()))).status_code == 200
    mp = pool(p)
    entries = mp.entries()
    assert len(entries) == 2 and p.proxy.open == 2
    await mp.aclose()  # what the service's stop hook does
    assert mp.closed and len(mp) == 0 and all(e.closed for e in entries)
    await wait_for(lambda: p.proxy.open == 0, timeout=2)
    with pytest.raises(RuntimeError, match="closed"):
        mp.acquire("k", "http://127.0.0.1:1/mcp", pinned_modern=True)
