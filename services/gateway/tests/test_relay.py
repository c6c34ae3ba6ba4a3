"""Server-initiated requests during a call — sampling, elicitation, roots — and progress/log
notifications, relayed by the gateway between a hosted server and the official client, in every
pairing of eras (2025 / 2026-07-28 on each side) and over the legacy SSE transport."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import mcp_types as types
import nats
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError

from services.gateway.tests.gateway_testkit import bearer, mcp_client, text_of
from wemcp.devstack.testing import wait_for
from wemcp.testkit.upstream import hosted_bridge, serve_upstream

pytestmark = pytest.mark.asyncio
MODERN = {"mcp-protocol-version": "2026-07-28", "accept": "application/json, text/event-stream"}
LEGACY = {"mcp-protocol-version": "2025-11-25", "accept": "application/json, text/event-stream"}
ASKING_CAPS = {"sampling": {}, "elicitation": {"form": {}}, "roots": {}}


def modern_meta(caps: dict | None = None) -> dict:
    return {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": ASKING_CAPS if caps is None else caps,
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"}}


class Asker:
    """The client's side: answers the server's questions and records what it was asked."""

    def __init__(self, who: str, refuse: bool = False) -> None:
        self.who, self.refuse = who, refuse
        self.sampled: list[tuple[Any, str]] = []
        self.elicited: list[tuple[Any, str]] = []
        self.rooted: list[Any] = []
        self.logs: list[Any] = []
        self.gate: asyncio.Event | None = None  # when set up, sampling waits for it

    async def sampling(self, ctx: Any, params: types.CreateMessageRequestParams) -> Any:
        text = params.messages[0].content.text
        self.sampled.append((ctx.request_id, text))
        if self.gate is not None:
            await self.gate.wait()
        if self.refuse:
            return types.ErrorData(code=-1, message=f"{self.who} said no")
        return types.CreateMessageResult(role="assistant", model="test-model",
                                         content=types.TextContent(type="text", text=f"{self.who}: {text}"))

    async def elicitation(self, ctx: Any, params: Any) -> Any:
        self.elicited.append((ctx.request_id, params.message))
        return types.ElicitResult(action="accept", content={"name": self.who, "ok": True})

    async def roots(self, ctx: Any) -> Any:
        self.rooted.append(ctx.request_id)
        return types.ListRootsResult(roots=[types.Root(uri=f"file:///home/{self.who}")])

    async def logging(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params.data)

    def options(self) -> dict[str, Any]:
        return {"sampling_callback": self.sampling, "elicitation_callback": self.elicitation,
                "list_roots_callback": self.roots, "logging_callback": self.logging, "log_level": "info"}

    def ids(self) -> list[Any]:
        return [i for i, _ in self.sampled] + [i for i, _ in self.elicited] + self.rooted


@contextlib.asynccontextmanager
async def asking_server(stack: Any, kind: str, slug: str = "ask") -> AsyncIterator[str]:
    if kind == "hosted":  # over stdio, behind the deployer's bridge
        async with hosted_bridge(slug, interactive=True) as url:
            await stack.deploy(slug, url, versions=["2025-11-25", "2026-07-28"])
            yield url
        return
    async with serve_upstream(kind, json_response=False, interactive=True, name="asker") as url:
        await stack.deploy(slug, url)
        yield url


async def exercise(c: Any, a: Asker) -> None:
    """Every kind of question and notification, through one client."""
    r = await c.call_tool("summarise", {"topic": "apples"})
    assert text_of(r) == f"test-model said: {a.who}: summarise apples"
    assert [t for _, t in a.sampled] == ["summarise apples"]
    r = await c.call_tool("confirm", {"topic": "deploy"})
    assert text_of(r) == f"deploy: {a.who} said yes"
    assert [m for _, m in a.elicited] == ["go ahead with deploy?"]
    r = await c.call_tool("roots", {})
    assert text_of(r) == f"file:///home/{a.who}"
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append((p, total, message))

    r = await c.call_tool("count", {"n": 3}, progress_callback=on_progress)
    assert text_of(r) == "counted 3"
    assert progress == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]


@pytest.mark.parametrize("kind,mode", [("both", "auto"), ("both", "legacy"), ("legacy", "auto"),
                                       ("legacy", "legacy"), ("hosted", "legacy"), ("hosted", "auto")])
async def test_server_asks_the_client(stack, kind, mode):
    """Sampling, elicitation, roots and progress reach the client and its answers reach the
    server, whichever era each side speaks."""
    async with asking_server(stack, kind):
        a = Asker("alice")
        async with mcp_client(stack.url + "/mcp/ask", bearer("alice"), mode=mode, **a.options()) as c:
            await exercise(c, a)
            # the server's log notification, relayed — except from a 2026 server to a 2025 client,
            # which cannot opt in to 2026 logging (documented)
            assert a.logs == ([] if (kind, mode) == ("both", "legacy") else ["counted to 3"])
            if mode == "legacy":
                # a 2025 client is asked with gateway ids, never the upstream's own
                assert all(isinstance(i, str) and i.startswith("wemcp-") for i in a.ids()), a.ids()
        relay = stack.mcp.router.relay
        assert not relay.waiting and not relay.parked  # nothing left behind


@pytest.mark.parametrize("kind", ["both", "legacy", "hosted"])
async def test_server_asks_over_legacy_sse(stack, kind):
    async with asking_server(stack, kind):
        a = Asker("alice")
        transport = sse_client(stack.url + "/mcp/ask/sse", headers=bearer("alice"))
        async with Client(transport, mode="legacy", **a.options()) as c:
            await exercise(c, a)
            assert all(isinstance(i, str) and i.startswith("wemcp-") for i in a.ids()), a.ids()
        assert not stack.mcp.router.relay.waiting


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("kind", ["both", "legacy"])
async def test_concurrent_questions_never_cross(stack, kind, mode):
    """Two users, two client sessions each, five calls at once per session, every call asking the
    client: each answer reaches the call that asked (a user's client sessions share one pooled 2025
    upstream session, and every upstream session numbers its requests from 0)."""
    async with asking_server(stack, kind):
        askers = [Asker(f"{user}{n}") for user in ("alice", "bob") for n in (1, 2)]

        async def client(a: Asker) -> list[str]:
            async with mcp_client(stack.url + "/mcp/ask", bearer(a.who[:-1]), mode=mode, **a.options()) as c:
                results = await asyncio.gather(*(c.call_tool("summarise", {"topic": f"{a.who}-{i}"})
                                                 for i in range(5)))
                return [text_of(r) for r in results]

        async with asyncio.timeout(60):
            texts = await asyncio.gather(*(client(a) for a in askers))
        for a, got in zip(askers, texts, strict=True):
            assert got == [f"test-model said: {a.who}: summarise {a.who}-{i}" for i in range(5)]
            assert sorted(t for _, t in a.sampled) == sorted(f"summarise {a.who}-{i}" for i in range(5))
        if mode == "legacy":  # the ids the clients were asked with never collide, across users and sessions
            ids = [i for a in askers for i in a.ids()]
            assert len(ids) == 20 and len(set(ids)) == 20, ids
        if kind == "legacy" and mode == "legacy":
            assert stack.mcp.upstream.opened == 2  # one pooled upstream session per user
        assert not stack.mcp.router.relay.waiting and not stack.mcp.router.relay.parked


async def initialize(h: httpx.AsyncClient, url: str, user: str) -> str:
    r = await h.post(url, headers={**LEGACY, **bearer(user)}, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": ASKING_CAPS,
            "clientInfo": {"name": "raw", "version": "1"}}})
    assert r.status_code == 200, r.text
    return r.headers["mcp-session-id"]


@pytest.mark.parametrize("kind", ["both", "legacy"])
async def test_only_the_asked_session_can_answer(stack, kind):
    async with asking_server(stack, kind):
        a = Asker("alice")
        a.gate = asyncio.Event()
        url = stack.url + "/mcp/ask"
        async with mcp_client(url, bearer("alice"), mode="legacy", **a.options()) as c, \
                httpx.AsyncClient(timeout=10) as h:
            call = asyncio.create_task(c.call_tool("summarise", {"topic": "secrets"}))
            await wait_for(lambda: a.sampled, timeout=10)
            (gid, _), = a.sampled
            forged = {"jsonrpc": "2.0", "id": gid, "result": {
                "role": "assistant", "model": "evil", "content": {"type": "text", "text": "forged"}}}
            # bob's session, and another session of alice's: neither was asked
            for user in ("bob", "alice"):
                sid = await initialize(h, url, user)
                r = await h.post(url, headers={**LEGACY, **bearer(user), "mcp-session-id": sid}, json=forged)
                assert r.status_code == 202
            assert gid in stack.mcp.router.relay.waiting  # still waiting for the asked session
            a.gate.set()
            r = await asyncio.wait_for(call, 30)
            assert text_of(r) == "test-model said: alice: summarise secrets"
        assert not stack.mcp.router.relay.waiting


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("kind", ["both", "legacy"])
async def test_a_refusal_reaches_the_server_and_the_call_fails(stack, kind, mode):
    async with asking_server(stack, kind):
        a = Asker("alice", refuse=True)
        async with mcp_client(stack.url + "/mcp/ask", bearer("alice"), mode=mode, **a.options()) as c:
            try:
                r = await c.call_tool("summarise", {"topic": "no"})
            except MCPError as exc:
                failure = exc.message
            else:
                assert r.is_error, text_of(r)
                failure = text_of(r)
            assert a.sampled and "said no" in failure, failure
            # the session goes on
            assert text_of(await c.call_tool("echo", {"text": "still here"})) == "still here"


async def asked_to_sample(h: httpx.AsyncClient, url: str, topic: str) -> tuple[dict[str, Any], str, str]:
    """A 2026-07-28 call of ``summarise`` as alice, answered with an InputRequiredResult that carries
    the server's sampling question: (the call, the question's key, the requestState)."""
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "summarise", "arguments": {"topic": topic}, "_meta": modern_meta()}}
    r = await h.post(url, headers={**MODERN, **bearer("alice")}, json=call)
    assert r.status_code == 200, r.text
    first = r.json()["result"]
    assert first["resultType"] == "input_required", first
    (key, question), = first["inputRequests"].items()
    assert question["method"] == "sampling/createMessage"
    assert question["params"]["messages"][0]["content"]["text"] == f"summarise {topic}"
    return call, key, first["requestState"]


async def test_modern_client_of_a_2025_server_answers_by_retrying(stack, infra):
    """A 2026-07-28 client takes no standalone requests: the gateway answers the call with an
    InputRequiredResult carrying the 2025 server's question and a requestState bound to the caller,
    keeps the upstream call open, and continues it on the retry. Counted and recorded once."""
    nc = await nats.connect(infra.nats_url)
    events: list[dict] = []

    async def on_event(msg: Any) -> None:
        events.extend(json.loads(msg.data)["calls"])

    sub = await nc.subscribe("mcp.call.batch", cb=on_event)
    relay = stack.mcp.router.relay
    try:
        async with asking_server(stack, "legacy"), httpx.AsyncClient(timeout=30) as h:
            url = stack.url + "/mcp/ask"
            call, key, state = await asked_to_sample(h, url, "pears")
            assert list(relay.parked) == [state]

            answer = {"role": "assistant", "model": "m", "content": {"type": "text", "text": "juicy"}}
            retry = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                **call["params"], "inputResponses": {key: answer}, "requestState": state}}
            # someone else's state, or the state on another server: refused, the call stays parked
            r = await h.post(url, headers={**MODERN, **bearer("bob")}, json=retry)
            assert r.json()["error"]["code"] == -32602
            await stack.deploy("other", stack.mcp.routes.get("ask").endpoint)
            r = await h.post(stack.url + "/mcp/other", headers={**MODERN, **bearer("alice")}, json=retry)
            assert r.json()["error"]["code"] == -32602
            r = await h.post(url, headers={**MODERN, **bearer("alice")}, json={  # another tool
                **retry, "params": {**retry["params"], "name": "confirm"}})
            assert r.json()["error"]["code"] == -32602
            assert state in relay.parked

            r = await h.post(url, headers={**MODERN, **bearer("alice")}, json=retry)
            assert r.status_code == 200, r.text
            done = r.json()
            assert done["id"] == 2 and done["result"]["resultType"] == "complete"
            assert done["result"]["content"][0]["text"] == "m said: juicy"
            assert not relay.parked
            r = await h.post(url, headers={**MODERN, **bearer("alice")}, json=retry)  # used once
            assert r.json()["error"]["code"] == -32602

            # a question nobody answers: the server gets an error answer and the call ends
            relay.wait_seconds = 0.5
            r = await h.post(url, headers={**MODERN, **bearer("alice")}, json={**call, "id": 3, "params": {
                **call["params"], "arguments": {"topic": "never"}}})
            assert r.json()["result"]["resultType"] == "input_required"
            await wait_for(lambda: not relay.parked, timeout=5)

            # a client that declared no sampling: the server says so (nothing is relayed)
            r = await h.post(url, headers={**MODERN, **bearer("alice")}, json={**call, "id": 4, "params": {
                **call["params"], "_meta": modern_meta({})}})
            body = r.json()
            assert body["error"]["code"] == -32021 and "sampling" in body["error"]["message"], body
            assert not relay.parked

        def summarised() -> list[dict]:
            return [e for e in events if e["server_slug"] == "ask" and e["tool"] == "summarise"]

        await wait_for(lambda: len(summarised()) >= 3, timeout=10)
        # the pears call once (not once per leg), the unanswered one as a timeout, the refused one
        assert sorted([(e["status"], e["error_code"]) for e in summarised()],
                      key=str) == [("error", -32021), ("ok", None), ("timeout", -32001)]
    finally:
        await sub.unsubscribe()
        await nc.close()


async def test_modern_client_of_a_hosted_server_answers_by_retrying(stack):
    """2026-07-28 to a hosted stdio server (the gateway forwards both legs untouched): the deployer's
    bridge answers the call with an InputRequiredResult carrying the child's question and its own
    requestState, keeps the child's call open and continues it on the retry. The token is bound to
    the caller (the gateway says who), the tool, and works once."""
    async with asking_server(stack, "hosted"), httpx.AsyncClient(timeout=30) as h:
        url = stack.url + "/mcp/ask"
        call, key, state = await asked_to_sample(h, url, "plums")
        assert state.startswith("wemcp-br.") and not stack.mcp.router.relay.parked  # the bridge's, not the gateway's

        answer = {"role": "assistant", "model": "m", "content": {"type": "text", "text": "sweet"}}
        retry = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            **call["params"], "inputResponses": {key: answer}, "requestState": state}}
        # another user, or another tool: refused, the call stays parked
        r = await h.post(url, headers={**MODERN, **bearer("bob")}, json=retry)
        assert r.json()["error"]["code"] == -32602, r.text
        r = await h.post(url, headers={**MODERN, **bearer("alice")}, json={
            **retry, "params": {**retry["params"], "name": "confirm"}})
        assert r.json()["error"]["code"] == -32602

        r = await h.post(url, headers={**MODERN, **bearer("alice")}, json=retry)
        done = r.json()
        assert done["id"] == 2 and done["result"]["resultType"] == "complete", done
        assert done["result"]["content"][0]["text"] == "m said: sweet"
        r = await h.post(url, headers={**MODERN, **bearer("alice")}, json=retry)  # used once
        assert r.json()["error"]["code"] == -32602

        # a client that declared no sampling: the server says so, nothing is asked
        r = await h.post(url, headers={**MODERN, **bearer("alice")}, json={**call, "id": 4, "params": {
            **call["params"], "_meta": modern_meta({})}})
        body = r.json()
        assert "error" in body or body["result"].get("isError"), body
        assert "sampling" in json.dumps(body), body
