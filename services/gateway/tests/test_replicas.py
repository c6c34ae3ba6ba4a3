"""Two gateways behind a loopback round-robin balancer (balancer.py: every *request* goes to the next
gateway, so one client's initialize, calls, GET stream, answers and retries land on both): any replica
serves any request, because requests of a session or a parked call another replica owns are routed to
it by id (replicas.py, docs/scaling.md).

The gateway's MCP router tests, both eras on both sides, run here again in front of two replicas (the
test functions are imported, so the ``stack`` fixture of this module serves them), and so do the SSE,
relay (server-to-client requests, parked calls of 2026 clients), resumption and era tests whose
assertions read no replica's memory. Quotas: exact across both with decide-ahead off; with it on, the
calls that ran beyond the limit are at most the calls in flight. The conformance run of the MCP-fidelity
issue in front of two replicas is test_replicas_conformance.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import orjson
import pytest
import pytest_asyncio

from services.gateway.tests.gateway_testkit import USERS, bearer, mcp_client, open_stack, set_quota, text_of

# the router's, SSE, relay, resumption and era tests, collected again here against two replicas
from services.gateway.tests.test_mcp_router import (  # noqa: F401
    test_a_stdio_local_server_is_listed_but_not_called,
    test_both_client_eras_list_and_call,
    test_disabled_server_refused_within_a_second,
    test_no_redirect_on_trailing_slash,
    test_unknown_server_is_404,
)
from services.gateway.tests.test_relay import (  # noqa: F401
    test_a_refusal_reaches_the_server_and_the_call_fails,
    test_modern_client_of_a_2025_server_answers_by_retrying,
)
from services.gateway.tests.test_resume import (  # noqa: F401
    test_the_official_client_resumes_a_broken_stream_through_the_gateway,
    test_unknown_or_foreign_event_ids_resume_nothing,
)
from services.gateway.tests.test_streamable_eras import test_every_client_gets_its_own_revision  # noqa: F401
from wemcp.devstack.testing import serve_app
from wemcp.gateway.replicas import replay
from wemcp.testkit.upstream import build_server

pytestmark = pytest.mark.asyncio
MODERN = {"mcp-protocol-version": "2026-07-28"}


@pytest_asyncio.fixture
async def stack(request, settings_for, clean_bus, clean_redis, infra) -> AsyncIterator[Any]:
    """Two gateways (own runtime, port, sessions, Redis and NATS connections; shared Redis and NATS)
    behind the round-robin balancer; ``stack.url`` is the balancer's."""
    async with open_stack({**getattr(request, "param", {}), "replicas": 2}, settings_for, infra) as s:
        yield s
        # every request went through the balancer, to both replicas in turn
        hits = s.balancer.hits
        assert not hits or abs(hits[0] - hits[1]) <= 1, hits


def owned(stack: Any) -> list[int]:
    """Sessions each replica holds."""
    return [len(m.router.sessions) for m in stack.mcps]


def forwarded(stack: Any) -> int:
    return sum(r.extras["replicas"].forwarded for r in stack.runtimes)


async def test_sessions_are_owned_by_one_replica_and_reached_through_any(stack, both_upstream, legacy_upstream):
    await stack.deploy("echo", both_upstream)
    await stack.deploy("old", legacy_upstream)
    ids = [r.extras["replicas"].id for r in stack.runtimes]
    assert ids[0] != ids[1]
    async with contextlib.AsyncExitStack() as es:
        clients = [await es.enter_async_context(mcp_client(stack.url + "/mcp/" + slug, bearer("alice"), mode="legacy"))
                   for slug in ("echo", "old", "echo", "old")]
        for i, c in enumerate(clients):
            for n in range(3):
                assert text_of(await c.call_tool("echo", {"text": f"{i}-{n}"})) == f"{i}-{n}"
        # four sessions, initialized alternately on each replica, every later request forwarded as needed
        assert owned(stack) == [2, 2]
        for m, rid in zip(stack.mcps, ids, strict=True):
            assert all(sid.startswith(rid + ".") for sid in m.router.sessions)
        assert forwarded(stack) >= 4


async def test_a_session_id_of_another_user_is_still_refused(stack, both_upstream):
    """Forwarding changes nothing about who may use a session: the owner checks the caller."""
    await stack.deploy("mine", both_upstream)
    async with httpx.AsyncClient() as h:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        accept = {"accept": "application/json, text/event-stream"}
        r = await h.post(stack.url + "/mcp/mine", json=init, headers={**bearer("alice"), **accept})
        sid = r.headers["mcp-session-id"]
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        for _ in range(2):  # once on each replica: the owner, and the other, which forwards
            r = await h.post(stack.url + "/mcp/mine", json=call,
                             headers={**bearer("bob"), **accept, "mcp-session-id": sid,
                                      "mcp-protocol-version": "2025-06-18"})
            assert r.status_code == 404, r.text
            r = await h.post(stack.url + "/mcp/mine", json=call,
                             headers={**bearer("alice"), **accept, "mcp-session-id": sid,
                                      "mcp-protocol-version": "2025-06-18"})
            assert r.status_code == 200 and "echo" in r.text, r.text


async def test_legacy_sse_session_across_replicas(stack, both_upstream):
    """The GET /sse stream is held by one replica; every POST /messages goes to the other half the
    time and reaches the stream through its owner."""
    from mcp.client.session import ClientSession
    from mcp.client.sse import sse_client

    await stack.deploy("sse", both_upstream)
    async with sse_client(stack.url + "/mcp/sse/sse", headers=bearer("alice")) as (r, w), \
            ClientSession(r, w) as s:
        await s.initialize()
        for n in range(6):
            assert text_of(await s.call_tool("echo", {"text": f"sse-{n}"})) == f"sse-{n}"
        assert sorted(owned(stack)) == [0, 1]
        assert forwarded(stack) >= 3


async def test_the_owner_gone_is_an_unknown_session(stack, both_upstream):
    """A replica that stops takes its sessions with it: the other answers them as unknown (404, so a
    2025 client initializes again), and new sessions work."""
    await stack.deploy("gone", both_upstream)
    accept = {"accept": "application/json, text/event-stream", **bearer("alice")}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    owner = stack.runtimes[1]
    async with httpx.AsyncClient() as h:
        sids = [(await h.post(stack.url + "/mcp/gone", json=init, headers=accept)).headers["mcp-session-id"]
                for _ in range(2)]
        (sid,) = [s for s in sids if s.startswith(owner.extras["replicas"].prefix)]
        await owner.extras["replicas"].stop()  # its announcement is withdrawn, as on shutdown
        other = stack.runtimes[0].extras["replicas"]
        other.forget(owner.extras["replicas"].id)
        backend = stack.balancer.backends[0]
        r = await h.post(backend + "/mcp/gone", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                         headers={**accept, "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"})
        assert r.status_code == 404, r.text


# -- quotas across replicas ---------------------------------------------------------------------------
class Counting:
    """An upstream that counts the tools/call requests it executed."""

    def __init__(self, app: Any) -> None:
        self.app, self.calls = app, 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        if b'"tools/call"' in body:
            self.calls += 1
        await self.app(scope, replay(body, receive), send)


@contextlib.asynccontextmanager
async def counting_upstream() -> AsyncIterator[tuple[str, Counting]]:
    counter = Counting(build_server("counted").streamable_http_app(json_response=True))
    async with serve_app(counter, lifespan="on") as url:
        yield url + "/mcp", counter


async def _calls(stack: Any, slug: str, n: int) -> list[int]:
    """``n`` concurrent 2026-era tools/call as alice on the system key: their HTTP statuses."""
    async def one(h: httpx.AsyncClient, i: int) -> int:
        r = await h.post(stack.url + f"/mcp/{slug}", headers={**bearer("alice"), **MODERN}, json={
            "jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
                "name": "echo", "arguments": {"text": str(i)}, "_meta": {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {}}}})
        assert r.status_code in (200, 429), r.text
        if r.status_code == 200:
            assert orjson.loads(r.content)["result"]["content"][0]["text"] == str(i)
        return r.status_code

    async with httpx.AsyncClient(timeout=30) as h:
        return list(await asyncio.gather(*(one(h, i) for i in range(n))))


async def test_quota_exact_across_replicas_with_decide_ahead_off(stack):
    async with counting_upstream() as (url, counter):
        await stack.deploy("metered", url)
        await set_quota(stack, 12)
        for m in stack.mcps:
            m.quota.ahead_margin = 0  # every decision before the call
        statuses = await _calls(stack, "metered", 20) + await _calls(stack, "metered", 20)
        assert statuses.count(200) == 12 and statuses.count(429) == 28
        assert counter.calls == 12  # nothing ran beyond the limit
        used = await stack.mcp.quota.used_today(str(USERS["alice"]), [("server", "metered")])
        assert used == [12]


async def test_quota_with_decide_ahead_overshoots_at_most_the_calls_in_flight(stack):
    limit, in_flight = 40, 8
    async with counting_upstream() as (url, counter):
        await stack.deploy("ahead", url)
        await set_quota(stack, limit)
        ahead = 0
        for m in stack.mcps:
            m.quota.ahead_margin, m.quota.ahead_seconds = 4, 60.0
            original = m.quota.decide_ahead

            def counting(*a: Any, _f: Any = original, **kw: Any) -> Any:
                nonlocal ahead
                fut = _f(*a, **kw)
                ahead += fut is not None
                return fut

            m.quota.decide_ahead = counting
        statuses: list[int] = []
        while len(statuses) < 3 * limit and statuses.count(429) < 2 * in_flight:
            statuses += await _calls(stack, "ahead", in_flight)  # waves of `in_flight` at once
        assert ahead > 0  # decisions were taken alongside calls
        overshoot = counter.calls - limit
        assert 0 <= overshoot <= in_flight, (counter.calls, statuses)
        # the counter itself never passes the limit (an over-limit call is refused, never counted twice)
        used = await stack.mcp.quota.used_today(str(USERS["alice"]), [("server", "ahead")])
        assert used == [limit]


@pytest.mark.parametrize("stack", [{"mcp_allowed_hosts": ["mcp.example.test"]}], indirect=True)
async def test_the_owner_sees_the_clients_host_and_origin(stack, both_upstream):
    """A forwarded request keeps the client's Host (and Origin), so the owner's Host allow-list and
    Origin rule (DNS rebinding) judge the client's request, not the forwarding replica's address."""
    await stack.deploy("hosted-name", both_upstream)
    headers = {**bearer("alice"), "accept": "application/json, text/event-stream", "host": "mcp.example.test",
               "origin": "https://mcp.example.test"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    async with httpx.AsyncClient() as h:
        r = await h.post(stack.url + "/mcp/hosted-name", json=init, headers=headers)
        assert r.status_code == 200, r.text
        session = {**headers, "mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
        before = forwarded(stack)
        for i in range(2):  # one lands on the other replica and is forwarded
            r = await h.post(stack.url + "/mcp/hosted-name", json={"jsonrpc": "2.0", "id": 2 + i,
                                                                    "method": "tools/list"}, headers=session)
            assert r.status_code == 200 and "echo" in r.text, r.text
        assert forwarded(stack) == before + 1
        # and a Host outside the list is still refused, forwarded or not
        for _ in range(2):
            r = await h.post(stack.url + "/mcp/hosted-name", json={"jsonrpc": "2.0", "id": 9, "method": "tools/list"},
                             headers={**session, "host": "evil.example.test"})
            assert r.status_code in (403, 421), r.text
