"""/v1/chat/completions through the real gateway with the real `openai` client: MCP tools by ref
(through the gateway's MCP path, not metered), Responses-style server_url tools, function tools,
streaming, and every kind of bad input."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import openai
import pytest

from wemcp.devstack.infra import free_port
from wemcp.testkit.agents import EXTERNAL_KEY
from wemcp.testkit.model import ScriptedModel

TIME_Q = "TIME: what time is it in Tokyo, judging from New York?"
TIME_TOOL = {"type": "mcp", "ref": "time"}


def client(p, **kw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=p.gateway + "/v1", api_key=p.user_token, max_retries=0, **kw)


def check_time_answer(text: str) -> None:
    m = re.fullmatch(r"When it is (\d\d):(\d\d) in New York, it is (\d\d):(\d\d) in Tokyo\.", text)
    assert m, text
    ny_now = datetime.now(ZoneInfo("America/New_York"))
    ny = ny_now.replace(hour=int(m[1]), minute=int(m[2]), second=0, microsecond=0)
    assert abs((ny_now - ny).total_seconds()) < 120 or abs((ny_now - ny).total_seconds()) > 86_280, text
    tokyo = ny.astimezone(ZoneInfo("Asia/Tokyo"))
    assert (tokyo.hour, tokyo.minute) == (int(m[3]), int(m[4])), text


async def test_time_question_answered_through_two_mcp_rounds(platform):
    await platform.add_provider()
    c = client(platform)
    r = await c.chat.completions.create(model="scripted-1", messages=[{"role": "user", "content": TIME_Q}],
                                        tools=[TIME_TOOL])
    check_time_answer(r.choices[0].message.content)
    assert r.choices[0].finish_reason == "stop"
    calls = r.model_extra["mcp_calls"]
    assert [(c["round"], c["tool"], c["status"]) for c in calls] == [(1, "get_current_time", "ok"),
                                                                     (2, "convert_time", "ok")]
    assert r.model_extra["tool_rounds"] == 2
    assert r.usage.total_tokens == 45  # three model rounds of 15
    assert platform.upstream.calls == ["get_current_time", "convert_time"]
    # the model saw the MCP tools as functions, and the provider got the decrypted key
    offered = {t["function"]["name"] for t in platform.model.requests[0]["tools"]}
    assert offered == {"time__get_current_time", "time__convert_time"}
    assert platform.model.auth_headers == ["Bearer sk-test-provider-key"] * 3
    # the MCP calls went through the gateway path as the caller; a plain chat completion is not an agent
    # run, so they carry no run context and count against the server's daily quota
    assert len(platform.router.seen) == 2
    for seen in platform.router.seen:
        assert seen["user"] == str(platform.user_id)
        assert seen["authorization"] == f"Bearer {platform.user_token}"
        assert seen["reason"] != "agent_run" and seen["counted"] is True


async def test_streaming_answer_and_mcp_calls(platform):
    await platform.add_provider()
    c = client(platform)
    stream = await c.chat.completions.create(model="scripted-1", messages=[{"role": "user", "content": TIME_Q}],
                                             tools=[TIME_TOOL], stream=True, stream_options={"include_usage": True})
    pieces, finish, extra, usage, ids = [], None, None, None, set()
    async for chunk in stream:
        ids.add(chunk.id)
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.delta.content:
                pieces.append(ch.delta.content)
            assert not ch.delta.tool_calls  # MCP tool calls stay on the server
            if ch.finish_reason:
                finish, extra = ch.finish_reason, chunk.model_extra
    assert len(pieces) > 3  # really streamed, word by word
    check_time_answer("".join(pieces))
    assert finish == "stop" and len(ids) == 1
    assert [c["tool"] for c in extra["mcp_calls"]] == ["get_current_time", "convert_time"]
    assert usage.total_tokens == 45
    # on the wire: server-sent events ending with [DONE]
    async with platform.http.stream("POST", "/v1/chat/completions", headers=platform.auth(), json={
            "model": "scripted-1", "stream": True, "messages": [{"role": "user", "content": "hello"}]}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in r.aiter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    assert "You said: hello" == "".join(json.loads(x[5:])["choices"][0]["delta"].get("content") or ""
                                        for x in lines[:-1] if json.loads(x[5:])["choices"])


async def test_no_provider_says_how_to_add_one(platform):
    models = await client(platform).models.list()
    assert models.data == []
    with pytest.raises(openai.APIStatusError) as e:
        await client(platform).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 503
    assert "POST /api/v1/model-providers" in e.value.message
    await platform.add_provider()
    assert [m.id for m in (await client(platform).models.list()).data] == ["scripted-1"]
    with pytest.raises(openai.NotFoundError) as e:
        await client(platform).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "scripted-1" in e.value.message


async def test_unknown_ref_is_a_clean_400(platform):
    await platform.add_provider()
    with pytest.raises(openai.BadRequestError) as e:
        await client(platform).chat.completions.create(
            model="scripted-1", messages=[{"role": "user", "content": TIME_Q}],
            tools=[TIME_TOOL, {"type": "mcp", "ref": "no-such-server"}])
    assert "no-such-server" in e.value.message and e.value.code == "unknown_mcp_ref"
    r = await platform.http.post("/v1/chat/completions", headers=platform.auth(), json={
        "model": "scripted-1", "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "mcp", "ref": "no-such-server"}]})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["error"]["param"] == "tools[0]"
    assert platform.model.requests == []  # refused before the model was asked


async def test_loop_bound(platform):
    await platform.add_provider()
    c = client(platform)
    with pytest.raises(openai.UnprocessableEntityError) as e:
        await c.chat.completions.create(model="scripted-1", messages=[{"role": "user", "content": "LOOP"}],
                                        tools=[TIME_TOOL], extra_body={"max_tool_rounds": 3})
    assert e.value.code == "tool_loop_limit" and "after 3 rounds" in e.value.message
    assert [c["tool"] for c in e.value.response.json()["mcp_calls"]] == ["get_current_time"] * 3
    assert len(platform.model.requests) == 4  # 3 rounds with tools, the 4th still asked for one
    # streamed: the error arrives as an SSE error event, which the client raises
    stream = await c.chat.completions.create(model="scripted-1", messages=[{"role": "user", "content": "LOOP"}],
                                             tools=[TIME_TOOL], stream=True, extra_body={"max_tool_rounds": 2})
    with pytest.raises(openai.APIError) as e2:
        async for _ in stream:
            pass
    assert "after 2 rounds" in str(e2.value)
    # a bound outside the allowed range is refused up front
    with pytest.raises(openai.BadRequestError):
        await c.chat.completions.create(model="scripted-1", messages=[{"role": "user", "content": "LOOP"}],
                                        tools=[TIME_TOOL], extra_body={"max_tool_rounds": 1000})


async def test_provider_down_or_slow(platform):
    await platform.add_provider("down", base_url=f"http://127.0.0.1:{free_port()}/v1", models=["gone-1"])
    await platform.add_provider()
    c = client(platform)
    with pytest.raises(openai.APIStatusError) as e:
        await c.chat.completions.create(model="gone-1", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 502 and "unreachable" in e.value.message and "down" in e.value.message
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        await c.chat.completions.create(model="scripted-1", messages=[{"role": "user", "content": "SLOW"}])
    assert e.value.status_code == 504 and "did not answer within 3 s" in e.value.message
    assert time.monotonic() - t0 < 5.5
    with pytest.raises(openai.APIStatusError) as e:  # streamed: still a 504 before any byte was sent
        await c.chat.completions.create(model="scripted-1", messages=[{"role": "user", "content": "SLOW"}],
                                        stream=True)
    assert e.value.status_code == 504


async def test_malformed_tool_arguments_go_back_to_the_model(platform):
    await platform.add_provider()
    for stream in (False, True):
        platform.upstream.calls.clear()
        r = await platform.http.post("/v1/chat/completions", headers=platform.auth(), json={
            "model": "scripted-1", "messages": [{"role": "user", "content": "BADARGS"}], "tools": [TIME_TOOL],
            "stream": stream})
        assert r.status_code == 200, r.text
        if stream:
            chunks = [json.loads(x[5:]) for x in r.text.split("\n") if x.startswith("data:") and "[DONE]" not in x]
            calls = next(c["mcp_calls"] for c in chunks if "mcp_calls" in c)
            text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        else:
            calls, text = r.json()["mcp_calls"], r.json()["choices"][0]["message"]["content"]
        assert [c["status"] for c in calls] == ["invalid_arguments", "ok"]
        assert calls[0]["arguments"] == '{"timezone": "UTC"'
        assert text.startswith("UTC now: ")
        assert platform.upstream.calls == ["get_current_time"]  # the malformed call never reached the server


async def test_server_url_tools_with_headers_and_allowed_tools(platform):
    await platform.add_provider()
    c = client(platform)
    ext = {"type": "mcp", "server_label": "calc", "server_url": platform.external,
           "headers": {"X-Api-Key": EXTERNAL_KEY}, "require_approval": "never"}
    r = await c.chat.completions.create(model="scripted-1", messages=[{"role": "user", "content": "ADD"}],
                                        tools=[TIME_TOOL, ext])
    assert r.choices[0].message.content == "The sum is 42."
    assert r.model_extra["mcp_calls"][0]["server"] == "calc" and r.model_extra["mcp_calls"][0]["ref"] is None
    with pytest.raises(openai.BadRequestError) as e:
        await c.chat.completions.create(model="scripted-1", messages=[{"role": "user", "content": "ADD"}],
                                        tools=[{**ext, "headers": {"X-Api-Key": "wrong"}}])
    assert e.value.code == "mcp_unauthorized"
    # allowed_tools narrows what the model sees
    r = await c.chat.completions.create(model="scripted-1", messages=[{"role": "user", "content": TIME_Q}],
                                        tools=[{**TIME_TOOL, "allowed_tools": ["get_current_time"]}])
    assert r.choices[0].message.content == "I have no time tools."
    assert [t["function"]["name"] for t in platform.model.requests[-1]["tools"]] == ["time__get_current_time"]
    with pytest.raises(openai.BadRequestError) as e:
        await c.chat.completions.create(model="scripted-1", messages=[{"role": "user", "content": TIME_Q}],
                                        tools=[{**TIME_TOOL, "allowed_tools": ["rm_rf"]}])
    assert "rm_rf" in e.value.message and "get_current_time" in e.value.message


async def test_function_tools_stay_with_the_client(platform):
    await platform.add_provider()
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}
    r = await client(platform).chat.completions.create(
        model="scripted-1", messages=[{"role": "user", "content": "WEATHER"}], tools=[TIME_TOOL, weather])
    assert r.choices[0].finish_reason == "tool_calls"
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert r.model_extra["mcp_calls"] == []


@pytest.mark.parametrize("body,status,needle", [
    ("{not json", 400, "not valid JSON"),
    ({"model": "scripted-1"}, 400, "messages"),
    ({"model": "scripted-1", "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ({"model": "scripted-1", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "shell"}]},
     400, "type"),
    ({"model": "scripted-1", "messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "mcp", "ref": "time", "server_url": "http://x"}]}, 400, "exactly one"),
    ({"model": "scripted-1", "messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "mcp", "ref": "../etc"}]}, 400, "slug"),
    ({"model": "scripted-1", "messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "mcp", "ref": "time", "headers": {"X-WeMcp-User-Id": "x"}}]}, 400, "X-WeMcp"),
    ({"model": "scripted-1", "messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "mcp", "ref": "time", "require_approval": "always"}]}, 400, "never"),
    ({"model": 5, "messages": [{"role": "user", "content": "x"}]}, 400, "model"),
])
async def test_bad_input_is_a_clean_4xx(platform, body, status, needle):
    await platform.add_provider()
    kw = {"content": body, "headers": {**platform.auth(), "content-type": "application/json"}} \
        if isinstance(body, str) else {"json": body, "headers": platform.auth()}
    r = await platform.http.post("/v1/chat/completions", **kw)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"] and needle in r.json()["error"]["message"]


async def test_anonymous_is_refused_and_provider_keys_never_leak(platform, capfd):
    r = await platform.http.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert r.status_code == 401
    created = await platform.add_provider(api_key="sk-very-secret-provider-key-42")
    assert created["has_api_key"] is True and "api_key" not in created
    listed = await platform.http.get("/api/v1/model-providers", headers=platform.admin)
    assert listed.status_code == 200 and "sk-very-secret" not in listed.text
    assert (await platform.http.get("/api/v1/model-providers", headers=platform.auth())).status_code == 403
    r = await platform.http.post("/v1/chat/completions", headers=platform.auth(),
                                 json={"model": "scripted-1", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and platform.model.auth_headers[-1] == "Bearer sk-very-secret-provider-key-42"
    # stored sealed, not in the clear
    from sqlalchemy import text
    async with platform.app.state.runtime.sessions() as s:
        raw = (await s.execute(text("SELECT api_key_sealed FROM agents.model_providers"))).scalar_one()
    assert "sk-very-secret" not in raw and raw.startswith("v1.p")  # wemcp.common.sealing, a passphrase KEK
    out, err = capfd.readouterr()
    assert "sk-very-secret" not in out + err
    # bad provider input
    bad = await platform.http.post("/api/v1/model-providers", headers=platform.admin,
                                   json={"name": "Bad Name", "base_url": "ftp://x", "models": []})
    assert bad.status_code == 422
    dup = await platform.http.post("/api/v1/model-providers", headers=platform.admin,
                                   json={"name": "local", "base_url": "http://x", "models": ["a"]})
    assert dup.status_code == 409


async def test_scripted_model_is_deterministic():
    # guards the double itself: a model server that ignores the conversation proves nothing
    m = ScriptedModel()
    tools = [{"type": "function", "function": {"name": "time__get_current_time"}},
             {"type": "function", "function": {"name": "time__convert_time"}}]
    first = m.decide({"messages": [{"role": "user", "content": TIME_Q}], "tools": tools})
    assert first["tool_calls"][0][0] == "time__get_current_time"
    assert m.decide({"messages": [{"role": "user", "content": "hi"}]}) == {"content": "You said: hi"}
