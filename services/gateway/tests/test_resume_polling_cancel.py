"""Two things a 2025 session's call needs from the gateway beyond relaying messages:

- **SSE polling** (SEP-1699, the Streamable HTTP spec's "Resumability and Redelivery"): a server may
  end a call's SSE stream before its reply, once it sent an event id, and expects the client back
  with ``Last-Event-ID`` after its ``retry`` hint. Through the gateway the client sees the same —
  a priming event with that retry, the end of the stream, the rest on its ``GET`` — while the gateway
  resumes the upstream stream itself; clients that cannot resume keep one stream. The call used to
  fail with "the stream ended without a reply".
- **Cancellation**: a 2025 client's ``notifications/cancelled`` reaches the upstream under the id the
  upstream saw — a remote server's pooled session, or through the deployer's bridge the stdio child
  that runs the call — and the server's handler is cancelled. It used to be dropped.

The official ``mcp`` client against real servers (remote of both kinds, hosted over stdio)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2 as httpx
import pytest
from mcp import Client
from mcp.client.sse import sse_client

from services.gateway.tests.gateway_testkit import bearer, mcp_client, text_of
from services.gateway.tests.test_resume import events, session
from wemcp.devstack.testing import wait_for
from wemcp.testkit.upstream import hosted_bridge, serve_upstream

pytestmark = pytest.mark.asyncio


@contextlib.asynccontextmanager
async def upstream(stack: Any, kind: str, slug: str) -> AsyncIterator[str]:
    if kind == "hosted":
        async with hosted_bridge(slug) as url:
            await stack.deploy(slug, url, versions=["2025-11-25", "2026-07-28"])
            yield stack.url + f"/mcp/{slug}"
        return
    async with serve_upstream(kind, json_response=False, resumable=True, name=slug) as url:
        # the revisions the deployer's introspection reports: a 2025 session talks 2025 upstream
        await stack.deploy(slug, url, versions=["2025-11-25"] + (["2026-07-28"] if kind == "both" else []))
        yield stack.url + f"/mcp/{slug}"


@pytest.mark.parametrize("kind,mode", [("both", "legacy"), ("legacy", "legacy"), ("legacy", "auto")])
async def test_a_call_whose_server_ends_the_stream_early_completes(stack, kind, mode):
    """The official client, 2025-11-25 (legacy) and 2026-07-28 (auto, a parked call of a 2025-only
    upstream): the answer arrives. (A 2026-07-28 client of a server of both eras talks 2026-07-28
    to it, where nothing is resumed; a hosted server's stdio has no stream to end.)"""
    async with upstream(stack, kind, "poll") as url:
        async with mcp_client(url, bearer("alice"), mode=mode) as c:
            r = await asyncio.wait_for(c.call_tool("polled", {}), 30)
            assert text_of(r) == "polled" and not r.is_error
            r = await c.call_tool("echo", {"text": "after"})  # the session goes on
            assert text_of(r) == "after"


@pytest.mark.parametrize("kind", ["both", "legacy"])
async def test_the_close_is_relayed_and_the_reconnection_gets_the_reply(stack, kind):
    """Raw HTTP, a 2025-11-25 session: the POST's stream is a priming event carrying the upstream's
    retry hint, then its end; the GET with that id brings the reply. A legacy SSE session (2024-11-05
    has no resumption) gets the reply on its stream: the gateway resumed upstream alone."""
    async with upstream(stack, kind, "poll") as url, httpx.AsyncClient(timeout=30) as h:
        headers = await session(h, url, "alice", "2025-11-25")
        call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "polled", "arguments": {}}}
        async with h.stream("POST", url, headers=headers, json=call) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            seen = await asyncio.wait_for(events(r.aiter_lines()), 10)  # returns only because it ends
        assert len(seen) == 1 and seen[0]["data"] == "" and seen[0]["retry"] == "300", seen
        async with h.stream("GET", url, headers={**headers, "last-event-id": seen[0]["id"]}) as g:
            assert g.status_code == 200
            rest = await asyncio.wait_for(events(g.aiter_lines()), 10)
        reply = json.loads(rest[-1]["data"])
        assert reply["id"] == 5 and reply["result"]["content"][0]["text"] == "polled"

    async with upstream(stack, kind, "poll2") as url:
        async with Client(sse_client(url + "/sse", headers=bearer("alice")), mode="legacy") as c:
            r = await asyncio.wait_for(c.call_tool("polled", {}), 30)
            assert text_of(r) == "polled" and not r.is_error


async def cancelled_upstream(c: Any) -> list[str]:
    r = await c.call_tool("cancellations", {})
    return list(json.loads(text_of(r)))


@pytest.mark.parametrize("kind", ["both", "legacy", "hosted"])
async def test_a_cancelled_call_is_cancelled_upstream(stack, kind):
    """The official client (2025-11-25) gives up on a slow call: its notifications/cancelled reaches
    the server, whose handler is cancelled (it records that), whatever carried it upstream."""
    async with upstream(stack, kind, "canc") as url:
        async with mcp_client(url, bearer("alice"), mode="legacy") as c:
            before = await cancelled_upstream(c)
            with anyio.move_on_after(1.0) as scope:
                await c.call_tool("wait_cancel", {"seconds": 20})
            assert scope.cancelled_caught
            got: list[str] = []

            async def seen() -> bool:
                got[:] = await cancelled_upstream(c)
                return len(got) > len(before)
            await wait_for(seen, timeout=10)
            assert got[len(before):] == ["canc:wait_cancel" if kind != "hosted" else "hosted:wait_cancel"]
            r = await c.call_tool("echo", {"text": "still here"})  # the session goes on
            assert text_of(r) == "still here"
        assert not stack.mcp.router.inflight  # nothing left behind


async def test_a_cancellation_names_only_the_sessions_own_requests(stack):
    """Another user's session naming alice's request id cancels nothing."""
    async with upstream(stack, "both", "canc2") as url, httpx.AsyncClient(timeout=30) as h:
        alice = await session(h, url, "alice", "2025-11-25")
        bob = await session(h, url, "bob", "2025-11-25")
        call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                "params": {"name": "wait_cancel", "arguments": {"seconds": 1.5}}}
        task = asyncio.create_task(h.post(url, headers=alice, json=call))
        await wait_for(lambda: stack.mcp.router.inflight, timeout=10)
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}}
        r = await h.post(url, headers=bob, json=cancel)
        assert r.status_code == 202
        for junk in ([3], {"x": 1}, None, True):  # not request ids: nothing happens, no 500
            r = await h.post(url, headers=alice, json={**cancel, "params": {"requestId": junk}})
            assert r.status_code == 202, r.text
        reply = await asyncio.wait_for(task, 20)
        assert "not cancelled" in reply.text
