"""A scripted OpenAI-compatible chat model on loopback (``POST /v1/chat/completions``, plain and
streamed): it decides from the last user message and the tool results after it, the model stand-in
of the agents' tests, the end-to-end tests and ``bench/agents_loop.py``."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from wemcp.devstack.standin import chat_completion_chunks


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _tool(tools: list[dict[str, Any]], suffix: str) -> str | None:
    for t in tools:
        name = (t.get("function") or {}).get("name", "")
        if name == suffix or name.endswith("__" + suffix):
            return name
    return None



@dataclass
class ScriptedModel:
    """Decides from the last user message (keywords TIME, EACH, BADARGS, LOOP, SLOW, WEATHER, ADD) and the
    tool results after it. Records every request."""

    slow_seconds: float = 6.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    def decide(self, body: dict[str, Any]) -> dict[str, Any]:
        """{"content": str} or {"tool_calls": [(name, raw_arguments)]}"""
        msgs = body["messages"]
        last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
        question = _text(msgs[last_user]["content"])
        results = [_text(m.get("content")) for m in msgs[last_user + 1:] if m["role"] == "tool"]
        tools = body.get("tools") or []
        system = " ".join(_text(m.get("content")) for m in msgs if m["role"] == "system")
        get_time, convert = _tool(tools, "get_current_time"), _tool(tools, "convert_time")
        if "LOOP" in question:
            return {"tool_calls": [(get_time, '{"timezone": "UTC"}')]}
        if "BADARGS" in question:
            if not results:
                return {"tool_calls": [(get_time, '{"timezone": "UTC"')]}  # cut short: not JSON
            if len(results) == 1:
                assert "not a valid JSON object" in results[0], results
                return {"tool_calls": [(get_time, '{"timezone": "UTC"}')]}
            return {"content": "UTC now: " + json.loads(results[-1])["datetime"]}
        if "EACH" in question:  # the current time from every server that tells it, in one round
            if not results:
                clocks = [t["function"]["name"] for t in tools
                          if t.get("function", {}).get("name", "").endswith("__get_current_time")]
                return {"tool_calls": [(name, '{"timezone": "UTC"}') for name in clocks]}
            return {"content": f"{len(results)} clocks read."}
        if "WEATHER" in question:
            return {"tool_calls": [("get_weather", '{"city": "Paris"}')]}
        if "ADD" in question:
            add = _tool(tools, "add")
            if not results:
                return {"tool_calls": [(add, '{"a": 2, "b": 40}')]}
            return {"content": f"The sum is {results[-1]}."}
        if "TIME" in question:
            if get_time is None or convert is None:
                return {"content": "I have no time tools."}
            if not results:
                return {"tool_calls": [(get_time, '{"timezone": "America/New_York"}')]}
            if len(results) == 1:
                hhmm = json.loads(results[0])["datetime"][11:16]
                return {"tool_calls": [(convert, json.dumps({"source_timezone": "America/New_York", "time": hhmm,
                                                             "target_timezone": "Asia/Tokyo"}))]}
            r = json.loads(results[1])
            return {"content": f"When it is {r['source']['datetime'][11:16]} in New York, "
                               f"it is {r['target']['datetime'][11:16]} in Tokyo."}
        prefix = f"[{system}] " if system else ""
        return {"content": f"{prefix}You said: {question}"}

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.auth_headers.append(request.headers.get("authorization"))
        question = _text([m for m in body["messages"] if m["role"] == "user"][-1]["content"])
        if "SLOW" in question:
            await asyncio.sleep(self.slow_seconds)
        d = self.decide(body)
        cid, model = "cmpl-" + uuid.uuid4().hex[:8], body["model"]
        calls: list[dict[str, Any]] = [{"id": f"call_{uuid.uuid4().hex[:8]}", "type": "function",
                                        "function": {"name": n, "arguments": a}} for n, a in d.get("tool_calls", [])]
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        if not body.get("stream"):
            msg: dict[str, Any] = {"role": "assistant", "content": d.get("content")}
            if calls:
                msg["tool_calls"] = calls
            return JSONResponse({"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
                                 "choices": [{"index": 0, "message": msg,
                                              "finish_reason": "tool_calls" if calls else "stop"}],
                                 "usage": usage})

        pieces = re.findall(r"\S+\s*", d["content"]) if d.get("content") else []
        return StreamingResponse(chat_completion_chunks(cid, 0, model, pieces, calls, usage),
                                 media_type="text/event-stream")
