"""Saved agents: CRUD and ownership, /v1/agents/{id}/chat/completions with the 100/day quota (the
MCP calls inside a run not counted), and the agent served as an MCP server to the official client."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx2 as httpx
import openai
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from sqlalchemy import select

from services.agents.tests.test_api_chat_completions import TIME_Q, check_time_answer
from wemcp.agents.models import bus_tables
from wemcp.common.identity import Identity
from wemcp.common.trust import platform_headers
from wemcp.quota.client import QuotaClient

AGENT = {"name": "Time Helper", "description": "Answers time questions", "model": "scripted-1",
         "instructions": "Be precise.", "mcp_servers": [{"ref": "time", "allowed_tools": None}]}


async def make_agent(p, **over) -> dict:
    r = await p.http.post("/api/v1/agents", headers=p.auth(), json={**AGENT, **over})
    assert r.status_code == 201, r.text
    return r.json()


async def test_agent_crud_and_ownership(platform):
    p = platform
    a = await make_agent(p)
    assert a["owner_id"] == str(p.user_id) and a["owner_kind"] == "user" and a["visibility"] == "private"
    assert a["mcp_url"] == f"/mcp/agents/{a['id']}"
    other = p.auth(uuid.uuid4())
    assert (await p.http.get(f"/api/v1/agents/{a['id']}", headers=other)).status_code == 404
    listed = (await p.http.get("/api/v1/agents", headers=p.auth())).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == a["id"] and listed["page_size"] == 20
    r = await p.http.patch(f"/api/v1/agents/{a['id']}", headers=other, json={"visibility": "public"})
    assert r.status_code == 404
    r = await p.http.patch(f"/api/v1/agents/{a['id']}", headers=p.auth(), json={"visibility": "public",
                                                                                "instructions": "Be brief."})
    assert r.status_code == 200 and r.json()["instructions"] == "Be brief."
    assert (await p.http.get(f"/api/v1/agents/{a['id']}", headers=other)).status_code == 200  # public now
    assert (await p.http.delete(f"/api/v1/agents/{a['id']}", headers=other)).status_code == 403
    # merchants own agents as merchants; users cannot claim it
    r = await p.http.post("/api/v1/agents", headers=p.auth(), json={**AGENT, "owner_kind": "merchant"})
    assert r.status_code == 403
    m = await p.http.post("/api/v1/agents", headers=p.auth(uuid.uuid4(), "merchant"),
                          json={**AGENT, "owner_kind": "merchant"})
    assert m.status_code == 201 and m.json()["owner_kind"] == "merchant"
    # bad input
    for bad in ({**AGENT, "mcp_servers": [{"ref": "time", "server_url": "http://x"}]},
                {**AGENT, "mcp_servers": [{"ref": "Bad Slug"}]}, {**AGENT, "name": ""}, {**AGENT, "extra": 1}):
        r = await p.http.post("/api/v1/agents", headers=p.auth(), json=bad)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
    assert (await p.http.get("/api/v1/agents/not-a-uuid", headers=p.auth())).status_code == 422
    assert (await p.http.delete(f"/api/v1/agents/{a['id']}", headers=p.auth())).status_code == 204
    assert (await p.http.get(f"/api/v1/agents/{a['id']}", headers=p.auth())).status_code == 404
    assert (await p.http.post("/api/v1/agents", json=AGENT)).status_code == 401

    # every save is an agent.saved event for goods (listing fields only: no instructions), in the
    # same transaction as the change
    async with p.app.state.runtime.sessions() as s:
        rows = (await s.execute(select(bus_tables.outbox.c.payload).where(bus_tables.outbox.c.subject == "agent.saved")
                                .order_by(bus_tables.outbox.c.id))).scalars().all()
    saved = [json.loads(r) for r in rows]
    mine = [(e["visibility"], e["deleted"]) for e in saved if e["agent_id"] == a["id"]]
    assert mine == [("private", False), ("public", False), ("public", True)]
    assert all("instructions" not in e and "Be brief." not in json.dumps(e) for e in saved)
    assert [e["saved_at"] for e in saved] == sorted(e["saved_at"] for e in saved)
    assert {e["owner_kind"] for e in saved} == {"user", "merchant"}


async def test_agent_chat_with_openai_client(platform):
    p = platform
    await p.add_provider()
    a = await make_agent(p)
    c = openai.AsyncOpenAI(base_url=f"{p.gateway}/v1/agents/{a['id']}", api_key=p.user_token, max_retries=0)
    r = await c.chat.completions.with_raw_response.create(model="ignored",
                                                          messages=[{"role": "user", "content": TIME_Q}])
    assert r.headers["x-ratelimit-limit"] == "100" and r.headers["x-ratelimit-remaining"] == "99"
    done = r.parse()
    check_time_answer(done.choices[0].message.content)
    assert len(done.model_extra["mcp_calls"]) == 2 and done.model == "scripted-1"
    assert p.model.requests[0]["messages"][0] == {"role": "system", "content": "Be precise."}
    stream = await c.chat.completions.create(model="x", messages=[{"role": "user", "content": "hello"}], stream=True)
    text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert text == "[Be precise.] You said: hello"
    with pytest.raises(openai.NotFoundError):
        await openai.AsyncOpenAI(base_url=f"{p.gateway}/v1/agents/{uuid.uuid4()}", api_key=p.user_token,
                                 max_retries=0).chat.completions.create(model="x", messages=[{"role": "user",
                                                                                              "content": "hi"}])


async def test_101st_agent_call_refused_and_inner_mcp_calls_not_counted(platform, infra):
    p = platform
    await p.add_provider()
    a = await make_agent(p)
    url = f"/v1/agents/{a['id']}/chat/completions"
    # the first call uses two MCP tools inside the run
    r = await p.http.post(url, headers=p.auth(), json={"messages": [{"role": "user", "content": TIME_Q}]})
    assert r.status_code == 200 and len(r.json()["mcp_calls"]) == 2
    assert [(s["reason"], s["counted"]) for s in p.router.seen] == [("agent_run", False)] * 2
    quota: QuotaClient = p.router.quota
    assert await quota.used_today(p.user_id, [("agent", a["id"]), ("server", "time")]) == [1, 0]
    sem = asyncio.Semaphore(8)

    async def call(i: int) -> int:
        async with sem:
            res = await p.http.post(url, headers=p.auth(), json={"messages": [{"role": "user", "content": f"hi {i}"}]})
            return res.status_code

    codes = await asyncio.gather(*(call(i) for i in range(99)))
    assert codes == [200] * 99
    r = await p.http.post(url, headers=p.auth(), json={"messages": [{"role": "user", "content": "one more"}]})
    assert r.status_code == 429, r.text
    body = r.json()
    assert body["error"]["code"] == "agent_quota_exceeded" and "100 free calls" in body["detail"]
    assert int(r.headers["retry-after"]) > 0 and body["limit"] == 100
    assert await quota.used_today(p.user_id, [("agent", a["id"]), ("server", "time")]) == [100, 0]
    # another user still has their own 100
    other = await p.http.post(url, headers=p.auth(uuid.uuid4()), json={"messages": [{"role": "user", "content": "x"}]})
    assert other.status_code == 404  # private agent: not even visible
    await p.http.patch(f"/api/v1/agents/{a['id']}", headers=p.auth(), json={"visibility": "public"})
    other = await p.http.post(url, headers=p.auth(uuid.uuid4()), json={"messages": [{"role": "user", "content": "x"}]})
    assert other.status_code == 200 and other.headers["x-ratelimit-remaining"] == "99"


def mcp_client(p, agent_id: str, user_id: uuid.UUID | None = None, **kw) -> Client:
    """The official client, speaking to /mcp/agents/{id} with the identity the gateway forwards."""
    headers = {**platform_headers("agents", Identity(user_id or p.user_id), issuer="gateway"),
               "authorization": f"Bearer {p.user_token}"}
    return Client(streamable_http_client(f"{p.agents}/mcp/agents/{agent_id}",
                                         http_client=httpx.AsyncClient(headers=headers, timeout=30)), **kw)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_agent_as_mcp_server(platform, mode):
    p = platform
    await p.add_provider()
    a = await make_agent(p)
    async with mcp_client(p, a["id"], mode=mode) as c:
        tools = (await c.list_tools()).tools
        assert [(t.name, t.description) for t in tools] == [("time_helper", "Answers time questions")]
        assert tools[0].input_schema["required"] == ["message"]
        result = await c.call_tool("time_helper", {"message": TIME_Q})
        assert not result.is_error
        check_time_answer(result.content[0].text)
        bad = await c.call_tool("time_helper", {"message": ""})
        assert bad.is_error and "message" in bad.content[0].text
        with pytest.raises(MCPError):
            await c.call_tool("other_tool", {"message": "x"})
    assert p.upstream.calls == ["get_current_time", "convert_time"]
    # the call went through the agent quota like any other agent call
    assert await p.router.quota.used_today(p.user_id, [("agent", a["id"])]) == [1]


async def test_agent_mcp_server_refusals(platform):
    p = platform
    await p.add_provider()
    a = await make_agent(p)
    async with httpx.AsyncClient(base_url=p.agents) as h:
        r = await h.post(f"/mcp/agents/{a['id']}", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert r.status_code == 401
        as_user = platform_headers("agents", Identity(p.user_id), issuer="gateway")
        r = await h.post(f"/mcp/agents/{uuid.uuid4()}", headers=as_user,
                         json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        r = await h.post("/mcp/agents/nope", headers=as_user, json={})
        assert r.status_code == 404
    # quota exhausted: a JSON-RPC error with the readable message
    quota: QuotaClient = p.router.quota
    key = quota.counter_key("agent", a["id"], quota.day().tag, str(p.user_id))
    await quota.redis.set(key, 100)
    async with mcp_client(p, a["id"]) as c:
        with pytest.raises(MCPError) as e:
            await c.call_tool("time_helper", {"message": "hi"})
    assert e.value.code == -32029 and "100 free calls" in e.value.error.message
