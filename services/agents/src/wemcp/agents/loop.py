"""The server-side tool loop behind ``/v1/chat/completions``.

Each round sends the conversation and the tools (the request's function tools plus every MCP tool,
named ``<server>__<tool>``) to the model. Tool calls the model makes to MCP tools run here and their
results go back to the model in the next round; when the model answers without MCP tool calls the
run ends with an ordinary completion. Function tools stay the client's: a round that calls one ends
the run with ``finish_reason: "tool_calls"`` (MCP calls of that round still run and are reported).
The loop is bounded: a model still calling MCP tools after ``max_tool_rounds`` rounds ends the run
with a 422 ``tool_loop_limit`` error. Every MCP call made is reported in ``mcp_calls``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from wemcp.agents.config import Settings
from wemcp.agents.errors import BadRequest, Unprocessable, oai
from wemcp.agents.mcp_pool import pool_key
from wemcp.agents.mcp_tools import SLUG, McpHub, McpServerSpec, check_public_url, gateway_url_for
from wemcp.agents.providers import ProviderClient, ResolvedModel
from wemcp.common.errors import AppError
from wemcp.common.netpolicy import reserved_header

# Keys the loop owns; everything else in the request body goes to the provider unchanged.
OWN_KEYS = {"model", "messages", "tools", "stream", "stream_options", "max_tool_rounds", "n"}
ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    function_tools: list[dict[str, Any]]
    mcp_specs: list[McpServerSpec]
    stream: bool
    include_usage: bool
    max_tool_rounds: int
    passthrough: dict[str, Any]


@dataclass
class Caller:
    """Whose run this is and what the gateway needs to call MCP servers on their behalf."""

    headers: dict[str, str]  # identity + Authorization, for the gateway
    user_id: str = "anonymous"  # whose pooled MCP connections the run may use
    scope: str = "chat"  # "chat", or "agent:<id>": plain completions and each agent pool apart
    run_headers: dict[str, str] = field(default_factory=dict)  # X-WeMcp-Agent-Run: this run only


def _bad(msg: str, param: str | None = None, code: str = "invalid_request") -> AppError:
    return oai(BadRequest, msg, code, param=param)


def _str_dict(v: Any, param: str) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise _bad(f"{param} must be an object of strings", param)
    for k in v:  # the platform's one rule for headers sent upstream (wemcp.common.netpolicy)
        why = reserved_header(k)
        if why is not None:
            raise _bad(f"{param}: {k!r} cannot be set: {why}", param)
    return dict(v)


def parse_mcp_tool(t: dict[str, Any], i: int, settings: Settings, caller: Caller) -> McpServerSpec:
    param = f"tools[{i}]"
    allowed = t.get("allowed_tools")
    if isinstance(allowed, dict):  # Responses-style {"tool_names": [...]}
        allowed = allowed.get("tool_names")
    if allowed is not None and (not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed)):
        raise _bad(f"{param}.allowed_tools must be a list of tool names", f"{param}.allowed_tools")
    approval = t.get("require_approval", "never")
    if approval not in ("never", None):
        raise _bad(f"{param}.require_approval: only \"never\" is supported (the loop runs on the server)",
                   f"{param}.require_approval")
    label = t.get("server_label")
    if label is not None and (not isinstance(label, str) or not LABEL.match(label)):
        raise _bad(f"{param}.server_label must match {LABEL.pattern}", f"{param}.server_label")
    headers = _str_dict(t.get("headers"), f"{param}.headers")
    ref, url = t.get("ref"), t.get("server_url")
    if (ref is None) == (url is None):
        raise _bad(f"{param}: an mcp tool needs exactly one of \"ref\" (a catalog slug) or \"server_url\"", param)
    if ref is not None:
        if not isinstance(ref, str) or not SLUG.match(ref):
            raise _bad(f"{param}.ref must be a server slug", f"{param}.ref", "unknown_mcp_ref")
        gw_url, gw_headers = gateway_url_for(settings.gateway_url, ref), {**headers, **caller.headers}
        return McpServerSpec(label or ref, gw_url, gw_headers, allowed, param, ref=ref,
                             call_headers=dict(caller.run_headers),
                             pool_key=pool_key(caller.user_id, caller.scope, gw_url, gw_headers))
    if not isinstance(url, str) or len(url) > 2000:
        raise _bad(f"{param}.server_url must be a URL", f"{param}.server_url")
    host = re.sub(r"[^A-Za-z0-9_-]", "_", (url.split("://", 1)[-1].split("/", 1)[0]))[:40]
    return McpServerSpec(label or host, url, headers, allowed, param,
                         pool_key=pool_key(caller.user_id, caller.scope, url, headers))


def parse_request(raw: Any, settings: Settings, caller: Caller, *, model_required: bool = True) -> ChatRequest:
    if not isinstance(raw, dict):
        raise _bad("the request body must be a JSON object")
    model = raw.get("model")
    if model_required and (not isinstance(model, str) or not model):
        raise _bad("model is required (GET /v1/models lists them)", "model")
    if model is not None and not isinstance(model, str):
        raise _bad("model must be a string", "model")
    messages = raw.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list", "messages")
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise _bad(f"messages[{j}] must be an object with a role in {sorted(ROLES)}", f"messages[{j}]")
    tools = raw.get("tools") or []
    if not isinstance(tools, list):
        raise _bad("tools must be a list", "tools")
    function_tools, specs = [], []
    for i, t in enumerate(tools):
        if not isinstance(t, dict):
            raise _bad(f"tools[{i}] must be an object", f"tools[{i}]")
        if t.get("type") == "function":
            fn = t.get("function")
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or "__" in fn["name"]:
                raise _bad(f"tools[{i}].function needs a name (without \"__\", which MCP tools use)",
                           f"tools[{i}].function")
            function_tools.append(t)
        elif t.get("type") == "mcp":
            specs.append(parse_mcp_tool(t, i, settings, caller))
        else:
            raise _bad(f"tools[{i}].type must be \"function\" or \"mcp\"", f"tools[{i}].type")
    if len(specs) > 16:
        raise _bad("at most 16 MCP servers per request", "tools")
    n = raw.get("n", 1)
    if n not in (1, None) and specs:
        raise _bad("n > 1 is not supported with MCP tools", "n")
    rounds = raw.get("max_tool_rounds", settings.max_tool_rounds)
    if not isinstance(rounds, int) or isinstance(rounds, bool) or not 1 <= rounds <= settings.max_tool_rounds_limit:
        raise _bad(f"max_tool_rounds must be an integer from 1 to {settings.max_tool_rounds_limit}",
                   "max_tool_rounds")
    stream = raw.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream must be a boolean", "stream")
    so = raw.get("stream_options") or {}
    return ChatRequest(model or "", messages, function_tools, specs, stream,
                       bool(isinstance(so, dict) and so.get("include_usage")), rounds,
                       {k: v for k, v in raw.items() if k not in OWN_KEYS})


async def check_urls(req: ChatRequest, settings: Settings) -> None:
    for s in req.mcp_specs:
        if s.ref is None:
            await check_public_url(s.url, f"{s.param}.server_url", settings.egress)


def _add_usage(total: dict[str, int], usage: Any) -> None:
    if isinstance(usage, dict):
        for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
            v = usage.get(k)
            if isinstance(v, int):
                total[k] = total.get(k, 0) + v


@dataclass
class Run:
    req: ChatRequest
    model: ResolvedModel
    hub: McpHub
    provider: ProviderClient
    settings: Settings
    shown_model: str
    extra_messages: list[dict[str, Any]] = field(default_factory=list)  # agent instructions first
    id: str = field(default_factory=lambda: "chatcmpl-" + uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))
    usage: dict[str, int] = field(default_factory=dict)
    rounds: int = 0

    def _body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        tools = self.req.function_tools + self.hub.definitions()
        body = {**self.req.passthrough, "messages": messages}
        if tools:
            body["tools"] = tools
        else:
            body.pop("tool_choice", None)
            body.pop("parallel_tool_calls", None)
        return body

    def _limit_error(self) -> AppError:
        return oai(Unprocessable, f"the model was still calling MCP tools after {self.req.max_tool_rounds} "
                   f"rounds (max_tool_rounds); raise max_tool_rounds (at most "
                   f"{self.settings.max_tool_rounds_limit}) or narrow the tools",
                   "tool_loop_limit", param="max_tool_rounds", mcp_calls=self.mcp_calls())

    def mcp_calls(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.hub.calls]

    async def _run_mcp(self, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for tc in calls:
            fn = tc.get("function") or {}
            content = await self.hub.call(self.rounds, fn.get("name", ""), fn.get("arguments"))
            out.append({"role": "tool", "tool_call_id": tc.get("id") or "", "content": content})
        return out

    def _split(self, tool_calls: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        mine = [tc for tc in tool_calls if self.hub.owns((tc.get("function") or {}).get("name", ""))]
        theirs = [tc for tc in tool_calls if tc not in mine]
        return mine, theirs

    # -- not streamed -------------------------------------------------------------------------
    async def complete(self) -> dict[str, Any]:
        messages = [*self.extra_messages, *self.req.messages]
        while True:
            self.rounds += 1
            data = await self.provider.complete(self.model, self._body(messages))
            _add_usage(self.usage, data.get("usage"))
            choice = data["choices"][0] if isinstance(data["choices"][0], dict) else {}
            raw_msg = choice.get("message")
            msg: dict[str, Any] = raw_msg if isinstance(raw_msg, dict) else {}
            raw_calls = msg.get("tool_calls")
            tool_calls: list[dict[str, Any]] = raw_calls if isinstance(raw_calls, list) else []
            mine, theirs = self._split(tool_calls)
            if not mine:
                return self._completion(msg, choice.get("finish_reason") or "stop")
            if self.rounds > self.req.max_tool_rounds:
                raise self._limit_error()
            results = await self._run_mcp(mine)
            if theirs:
                return self._completion({**msg, "tool_calls": theirs}, "tool_calls")
            messages = [*messages, {"role": "assistant", "content": msg.get("content"), "tool_calls": mine},
                        *results]

    def _completion(self, msg: dict[str, Any], finish: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": msg.get("content")}
        if msg.get("tool_calls"):
            message["tool_calls"] = msg["tool_calls"]
        if msg.get("refusal"):
            message["refusal"] = msg["refusal"]
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.shown_model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": self._usage(), "mcp_calls": self.mcp_calls(), "tool_rounds": self.rounds - 1}

    def _usage(self) -> dict[str, int]:
        u = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        u.update(self.usage)
        return u

    # -- streamed -----------------------------------------------------------------------------
    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.shown_model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}

    async def stream(self) -> AsyncIterator[dict[str, Any]]:
        """Chunks as they come: content deltas of every round are forwarded at once; MCP tool-call
        deltas are kept here. The last chunk carries ``finish_reason`` and ``mcp_calls``."""
        messages = [*self.extra_messages, *self.req.messages]
        started = False
        while True:
            self.rounds += 1
            content: list[str] = []
            calls: dict[int, dict[str, Any]] = {}
            finish = None
            async for chunk in self.provider.stream(self.model, self._body(messages)):
                if not started:  # only once the provider answered: earlier errors stay HTTP errors
                    started = True
                    yield self._chunk({"role": "assistant", "content": ""})
                _add_usage(self.usage, chunk.get("usage"))
                for choice in chunk.get("choices") or []:
                    if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                        continue
                    delta = choice.get("delta") or {}
                    if isinstance(delta.get("content"), str) and delta["content"]:
                        content.append(delta["content"])
                        yield self._chunk({"content": delta["content"]})
                    for tc in delta.get("tool_calls") or []:
                        if not isinstance(tc, dict):
                            continue
                        acc = calls.setdefault(int(tc.get("index", 0)), {"id": "", "type": "function",
                                                                          "function": {"name": "", "arguments": ""}})
                        if tc.get("id"):
                            acc["id"] = tc["id"]
                        fn = tc.get("function") or {}
                        if fn.get("name"):
                            acc["function"]["name"] += fn["name"]
                        if fn.get("arguments"):
                            acc["function"]["arguments"] += fn["arguments"]
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
            tool_calls = [calls[i] for i in sorted(calls)]
            mine, theirs = self._split(tool_calls)
            if not mine:
                if theirs:
                    yield self._chunk({"tool_calls": [{"index": i, **tc} for i, tc in enumerate(theirs)]})
                break
            if self.rounds > self.req.max_tool_rounds:
                raise self._limit_error()
            results = await self._run_mcp(mine)
            if theirs:
                yield self._chunk({"tool_calls": [{"index": i, **tc} for i, tc in enumerate(theirs)]})
                finish = "tool_calls"
                break
            messages = [*messages, {"role": "assistant", "content": "".join(content) or None, "tool_calls": mine},
                        *results]
        if not started:
            yield self._chunk({"role": "assistant", "content": ""})
        yield self._chunk({}, finish or "stop", mcp_calls=self.mcp_calls(), tool_rounds=self.rounds - 1)
        if self.req.include_usage:
            yield {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                   "model": self.shown_model, "choices": [], "usage": self._usage()}


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
