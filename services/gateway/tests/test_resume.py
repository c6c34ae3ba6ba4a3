"""Event ids and resumption on the SSE answers the gateway writes to 2025 sessions (resume.py; the
Streamable HTTP spec's "Resumability and Redelivery"): every event has an id, and a client whose
stream broke gets, with ``GET`` + ``Last-Event-ID`` on its session, the events of that stream it missed
— and the rest of the call as it happens — then the stream ends. Raw HTTP, against a real server of
each era and a hosted one over stdio behind the deployer's bridge."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import pytest

from services.gateway.tests.gateway_testkit import bearer
from wemcp.testkit.upstream import hosted_bridge, serve_upstream

pytestmark = pytest.mark.asyncio
ACCEPT = {"accept": "application/json, text/event-stream"}
CAPS: dict[str, Any] = {"sampling": {}, "elicitation": {"form": {}}, "roots": {}}


@contextlib.asynccontextmanager
async def server(stack: Any, kind: str) -> AsyncIterator[str]:
    if kind == "hosted":
        async with hosted_bridge("res", interactive=True) as url:
            await stack.deploy("res", url, versions=["2025-11-25", "2026-07-28"])
            yield stack.url + "/mcp/res"
        return
    async with serve_upstream(kind, json_response=False, interactive=True, name="resumer") as url:
        await stack.deploy("res", url)
        yield stack.url + "/mcp/res"


async def session(h: httpx.AsyncClient, url: str, user: str, version: str) -> dict[str, str]:
    r = await h.post(url, headers={**ACCEPT, **bearer(user), "mcp-protocol-version": version}, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": CAPS, "clientInfo": {"name": "raw", "version": "1"}}})
    assert r.status_code == 200, r.text
    headers = {**ACCEPT, **bearer(user), "mcp-protocol-version": version,
               "mcp-session-id": r.headers["mcp-session-id"]}
    r = await h.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert r.status_code == 202
    return headers


async def events(lines: AsyncIterator[str], until_id: Any = None) -> list[dict[str, str]]:
    """SSE events (``id``, ``data``) read from ``lines`` until the reply to ``until_id`` (or the end)."""
    out: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    async for line in lines:
        if line == "":
            if cur:
                out.append(cur)
                if until_id is not None and cur.get("data") and json.loads(cur["data"]).get("id") == until_id \
                        and "method" not in json.loads(cur["data"]):
                    return out
            cur = {}
        elif line.startswith(":"):
            continue
        else:
            k, _, v = line.partition(":")
            cur[k] = v.removeprefix(" ")
    if cur:
        out.append(cur)
    return out


def count_call(req_id: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "method": "tools/call",
            "params": {"name": "count", "arguments": {"n": 3}, "_meta": {"progressToken": "p"}}}


@pytest.mark.parametrize("version", ["2025-11-25", "2025-06-18"])
@pytest.mark.parametrize("kind", ["both", "legacy", "hosted"])
async def test_every_event_has_an_id_and_a_reconnection_gets_what_came_after(stack, kind, version):
    async with server(stack, kind) as url, httpx.AsyncClient(timeout=30) as h:
        headers = await session(h, url, "alice", version)
        async with h.stream("POST", url, headers=headers, json=count_call(7)) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            seen = await events(r.aiter_lines())
        ids = [e.get("id") for e in seen]
        assert all(ids), seen  # every event carries an id
        stream = {i.split("-")[0] for i in ids}
        assert len(stream) == 1 and [int(i.split("-")[1]) for i in ids] == list(range(1, len(ids) + 1))
        # 2025-11-25: a priming event (an id, empty data) first; 2025-06-18 clients get none
        assert (seen[0].get("data") == "") == (version == "2025-11-25")
        messages = [json.loads(e["data"]) for e in seen if e.get("data")]
        assert [m["params"]["progress"] for m in messages if m.get("method") == "notifications/progress"] == [1, 2, 3]
        assert messages[-1]["id"] == 7 and messages[-1]["result"]["content"][0]["text"] == "counted 3"

        # the client saw only the first two events: the rest is replayed, then the stream ends
        async with h.stream("GET", url, headers={**headers, "last-event-id": ids[1]}) as g:
            assert g.status_code == 200 and g.headers["content-type"].startswith("text/event-stream")
            again = await events(g.aiter_lines())  # returns only because the response ends
        assert again == seen[2:]

        # another user, with alice's session and event id: nothing (the session is not theirs)
        r = await h.get(url, headers={**headers, **bearer("bob"), "last-event-id": ids[1]})
        assert r.status_code == 405 and "data:" not in r.text


async def test_a_call_still_running_resumes_on_the_new_stream(stack):
    """The client drops its stream while the server waits for its answer (an elicitation); it
    reconnects with the last id it saw, answers, and the reply comes on the new stream."""
    async with server(stack, "both") as url, httpx.AsyncClient(timeout=30) as h:
        headers = await session(h, url, "alice", "2025-11-25")
        call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "confirm",
                                                                                "arguments": {"topic": "x"}}}
        async with h.stream("POST", url, headers=headers, json=call) as r:
            lines = r.aiter_lines()
            got: list[dict[str, str]] = []
            while not any(e.get("data") for e in got):
                got += await events_one(lines)
        # the POST stream is gone; the server's question was the last event seen
        question = json.loads(got[-1]["data"])
        assert question["method"] == "elicitation/create"
        async with h.stream("GET", url, headers={**headers, "last-event-id": got[-1]["id"]}) as g:
            assert g.status_code == 200
            answer = {"jsonrpc": "2.0", "id": question["id"], "result": {"action": "accept",
                                                                          "content": {"name": "al", "ok": True}}}
            a = await h.post(url, headers=headers, json=answer)
            assert a.status_code == 202
            rest = await asyncio.wait_for(events(g.aiter_lines()), 30)  # ends after the reply
        reply = json.loads(rest[-1]["data"])
        assert reply["id"] == 9 and reply["result"]["content"][0]["text"] == "x: al said yes"
        assert rest[-1]["id"].split("-")[0] == got[-1]["id"].split("-")[0]


async def events_one(lines: AsyncIterator[str]) -> list[dict[str, str]]:
    """One SSE event."""
    cur: dict[str, str] = {}
    async for line in lines:
        if line == "" and cur:
            return [cur]
        if line and not line.startswith(":"):
            k, _, v = line.partition(":")
            cur[k] = v.removeprefix(" ")
    return [cur] if cur else []


async def test_unknown_or_foreign_event_ids_resume_nothing(stack):
    async with server(stack, "both") as url, httpx.AsyncClient(timeout=30) as h:
        headers = await session(h, url, "alice", "2025-11-25")
        async with h.stream("POST", url, headers=headers, json=count_call(1)) as r:
            seen = await events(r.aiter_lines())
        other = await session(h, url, "alice", "2025-11-25")  # another session of the same user
        for hdrs, last in ((other, seen[1]["id"]), (headers, "99-1"), (headers, "garbage"), (headers, "1-999")):
            async with h.stream("GET", url, headers={**hdrs, "last-event-id": last}) as g:
                # the session's ordinary GET stream: keep-alives, never another stream's events
                assert g.status_code == 200
                first = await asyncio.wait_for(anext(g.aiter_lines()), 10)
                assert first.startswith(":"), first


class CutStream(httpx.AsyncByteStream):
    """The first ``events`` SSE events of a response, then its end: a stream broken mid-call."""

    def __init__(self, inner: Any, events: int) -> None:
        self.inner, self.events = inner, events

    async def __aiter__(self) -> AsyncIterator[bytes]:
        buf = b""
        async for chunk in self.inner:
            buf += chunk
            if buf.count(b"\n\n") >= self.events:
                end = 0
                for _ in range(self.events):
                    end = buf.index(b"\n\n", end) + 2
                yield buf[:end]
                return
        yield buf

    async def aclose(self) -> None:
        await self.inner.aclose()


class CutFirstCall(httpx.AsyncBaseTransport):
    """Cuts the SSE answer of the first tools/call after ``events`` events; records the GETs."""

    def __init__(self, events: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.events, self.cut = events, False
        self.gets: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await self.inner.handle_async_request(request)
        if request.method == "GET":
            self.gets.append(request.headers.get("last-event-id"))
        if (not self.cut and request.method == "POST" and b'"tools/call"' in request.content
                and "text/event-stream" in resp.headers.get("content-type", "")):
            self.cut = True
            return httpx.Response(resp.status_code, headers=resp.headers, stream=CutStream(resp.stream, self.events),
                                  request=request)
        return resp

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_official_client_resumes_a_broken_stream_through_the_gateway(stack):
    """The official client's call stream breaks after the priming event and the first progress
    notification: it reconnects with ``Last-Event-ID`` (GET), gets the rest and the result."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    cut = CutFirstCall(events=2)
    async with server(stack, "both") as url, httpx.AsyncClient(headers=bearer("alice"), transport=cut,
                                                               timeout=httpx.Timeout(30.0, read=60.0)) as http:
        async with Client(streamable_http_client(url, http_client=http), mode="legacy") as c:
            progress: list[float] = []

            async def on_progress(p: float, total: float | None, message: str | None) -> None:
                progress.append(p)

            r = await c.call_tool("count", {"n": 3}, progress_callback=on_progress)
            assert r.content[0].text == "counted 3"
            assert progress == [1, 2, 3]
        assert cut.cut and "1-2" in cut.gets  # resumed after the second event of the call's stream
