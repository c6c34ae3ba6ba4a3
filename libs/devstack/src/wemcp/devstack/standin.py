# ruff: noqa: RUF001  (Chinese punctuation in Chinese text is intended)
"""The development stand-in model provider: a real OpenAI-compatible chat-completions server on
loopback, so that chatting with an agent works on ``make run`` with no model configured.

It is **not a model**. It decides deterministically from the last user message and the tools it is
offered: when the message names a tool (``add``, ``demo-tools__add``) or asks what a tool answers
(words of the tool's name or description, a few Chinese words too: 时间, 加, 回显 ...), it calls that
tool with arguments read from the message (numbers, an IANA time zone, quoted or remaining text);
once the tool's result is back it answers with it. Otherwise it says it is a stand-in and repeats
the message. Streaming (``"stream": true``, with ``stream_options.include_usage``) and non-streaming
answers, tool calls streamed in pieces as real providers do.

Served models: ``dev-stand-in``. Development only: it refuses to start when ``WEMCP_ENV=production``.

    python -m wemcp.devstack.standin --port 8790
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

MODEL = "dev-stand-in"
PROVIDER = "dev-stand-in"
NOTICE_EN = "(development stand-in, not a real model)"
NOTICE_ZH = "（开发环境替身，不是真正的模型）"

# Chinese words people use for what common tools do, mapped to words found in tools' names
SYNONYMS: dict[str, tuple[str, ...]] = {
    "时间": ("time", "clock", "now"), "几点": ("time", "clock"), "现在": ("now", "time"), "时区": ("timezone", "time"),
    "加": ("add", "sum", "plus"), "求和": ("add", "sum"), "相加": ("add", "sum"), "和": ("sum",),
    "回显": ("echo",), "重复": ("echo", "repeat"), "复述": ("echo",),
    "问候": ("greet", "hello"), "你好": ("greet", "hello"), "打招呼": ("greet",),
    "天气": ("weather",), "搜索": ("search",), "翻译": ("translate",),
}
STOP = {"the", "a", "an", "of", "to", "is", "it", "in", "and", "or", "what", "please", "me", "for", "with", "on",
        "tool", "tools", "use", "call", "can", "you", "my", "i", "this", "that", "are", "be", "by", "from", "as",
        "at", "text", "given", "returns", "return", "says", "say", "back"}


def production() -> bool:
    return os.environ.get("WEMCP_ENV", "development").strip().lower() == "production"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _cjk(s: str) -> bool:
    return bool(re.search(r"[\u4e00-\u9fff]", s))


def _words(s: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", s.lower()) if w not in STOP and len(w) > 1}


def _short(name: str) -> str:
    """``demo-tools__add`` → ``add`` (MCP tools are offered as ``<label>__<tool>``)."""
    return name.rsplit("__", 1)[-1]


def pick_tool(question: str, tools: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The function tool the message names, else the one whose name and description share the most
    words with it (Chinese words through :data:`SYNONYMS`); None when nothing matches."""
    fns = [t["function"] for t in tools if isinstance(t, dict) and t.get("type") == "function"
           and isinstance(t.get("function"), dict) and t["function"].get("name")]
    low = question.lower()
    for f in sorted(fns, key=lambda f: -len(_short(f["name"]))):  # named outright: the longest name first
        for name in (f["name"], _short(f["name"])):
            if re.search(rf"(?<![\w-]){re.escape(name.lower())}(?![\w-])", low):
                return f
    asked = _words(question)
    for zh, en in SYNONYMS.items():
        if zh in question:
            asked.update(en)
    best, score = None, 0
    for f in fns:
        name_words = set(re.split(r"[_\-.]+", _short(f["name"]).lower()))
        desc_words = _words(str(f.get("description", "")))
        s = 2 * len(asked & name_words) + len(asked & desc_words)
        if s > score:
            best, score = f, s
    return best


def arguments_for(fn: dict[str, Any], question: str) -> dict[str, Any]:
    """Arguments for ``fn`` read from the message: numbers for numeric properties (in order), an IANA
    zone or UTC for time zones, ``zh``/``en`` for a language, quoted text or what follows the tool's
    name (else the whole message) for text."""
    params = fn.get("parameters") or {}
    props: dict[str, Any] = params.get("properties") or {}
    required = set(params.get("required") or [])
    numbers = re.findall(r"-?\d+(?:\.\d+)?", question)
    quoted = re.findall(r"[\"“「'‘](.+?)[\"”」'’]", question)
    m = re.search(rf"{re.escape(_short(fn['name']))}\s*[:：]?\s*(.+)$", question, re.IGNORECASE)
    if m is None:  # asked in Chinese: what follows the word that chose the tool
        name_words = set(re.split(r"[_\-.]+", _short(fn["name"]).lower()))
        for zh, en in SYNONYMS.items():
            if zh in question and name_words & set(en):
                m = re.search(rf"{re.escape(zh)}\s*[:：]?\s*(.+)$", question)
                break
    rest = m.group(1).strip() if m else question.strip()
    args: dict[str, Any] = {}
    for name, p in props.items():
        kind = p.get("type") if isinstance(p, dict) else None
        enum = p.get("enum") if isinstance(p, dict) else None
        lname = name.lower()
        if kind in ("integer", "number"):
            if numbers:
                v = numbers.pop(0)
                args[name] = int(float(v)) if kind == "integer" else (int(v) if re.fullmatch(r"-?\d+", v) else float(v))
            elif name in required:
                args[name] = 0
        elif "zone" in lname or lname in ("tz",):
            zone = re.search(r"\b[A-Z][A-Za-z_]+/[A-Za-z_]+(?:/[A-Za-z_]+)?\b", question)
            if zone or name in required:
                args[name] = zone.group(0) if zone else "UTC"
        elif lname in ("lang", "language", "locale") or (isinstance(enum, list) and {"zh", "en"} <= set(enum)):
            args[name] = "zh" if _cjk(question) else "en"
        elif isinstance(enum, list) and enum:
            args[name] = next((e for e in enum if str(e).lower() in question.lower()), enum[0])
        elif kind == "boolean":
            if name in required:
                args[name] = False
        elif kind in (None, "string"):
            if quoted:
                args[name] = quoted.pop(0)
            elif name in required or not args:
                args[name] = rest
    return args


def decide(body: dict[str, Any]) -> dict[str, Any]:
    """{"content": str} or {"tool_calls": [(name, arguments_json)]} for one request."""
    msgs = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    users = [i for i, m in enumerate(msgs) if m.get("role") == "user"]
    if not users:
        return {"content": f"{NOTICE_EN} Say something and I will answer."}
    question = _text(msgs[users[-1]].get("content"))
    zh = _cjk(question)
    after = msgs[users[-1] + 1:]
    results = [(m.get("name") or m.get("tool_call_id") or "tool", _text(m.get("content")))
               for m in after if m.get("role") == "tool"]
    if results:
        called = [_short(c["function"]["name"]) for m in after if m.get("role") == "assistant"
                  for c in m.get("tool_calls") or [] if isinstance(c, dict) and isinstance(c.get("function"), dict)]
        tool = called[-1] if called else "tool"
        out = results[-1][1].strip()
        if zh:
            return {"content": f"{NOTICE_ZH} 工具 {tool} 的结果：{out}"}
        return {"content": f"{NOTICE_EN} The tool {tool} answered: {out}"}
    fn = pick_tool(question, body.get("tools") or [])
    if fn is not None:
        return {"tool_calls": [(fn["name"], json.dumps(arguments_for(fn, question), ensure_ascii=False))]}
    names = ", ".join(_short(t["function"]["name"]) for t in body.get("tools") or []
                      if isinstance(t, dict) and isinstance(t.get("function"), dict))
    if zh:
        hint = f"可用的工具：{names}。说出工具名即可调用。" if names else "这个智能体没有工具。"
        return {"content": f"{NOTICE_ZH} 您说：{question} {hint}"}
    hint = f"Tools I can call: {names}; name one to call it." if names else "This agent has no tools."
    return {"content": f"{NOTICE_EN} You said: {question} {hint}"}


def _usage(body: dict[str, Any], answer: str) -> dict[str, int]:
    prompt = sum(len(_text(m.get("content")).split()) for m in body.get("messages") or [] if isinstance(m, dict))
    done = len(answer.split())
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


def create_app() -> FastAPI:
    app = FastAPI(title="WeMcp development stand-in model", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": PROVIDER}]}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "what": "development stand-in model, not a real model"}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> JSONResponse | StreamingResponse:
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise ValueError("messages must be a list")
        except ValueError as exc:
            return JSONResponse({"error": {"message": f"bad request: {exc}", "type": "invalid_request_error"}},
                                status_code=400)
        d = decide(body)
        cid, created = "chatcmpl-standin-" + uuid.uuid4().hex[:12], int(time.time())
        model = str(body.get("model") or MODEL)
        calls: list[dict[str, Any]] = [{"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                  "function": {"name": n, "arguments": a}} for n, a in d.get("tool_calls", [])]
        usage = _usage(body, d.get("content") or "")
        if not body.get("stream"):
            msg: dict[str, Any] = {"role": "assistant", "content": d.get("content")}
            if calls:
                msg["tool_calls"] = calls
            return JSONResponse({"id": cid, "object": "chat.completion", "created": created, "model": model,
                                 "choices": [{"index": 0, "message": msg,
                                              "finish_reason": "tool_calls" if calls else "stop"}],
                                 "usage": usage, "system_fingerprint": "dev-stand-in"})

        pieces = re.findall(r"\S+\s*|\s+", d.get("content") or "")
        include_usage = (body.get("stream_options") or {}).get("include_usage")
        return StreamingResponse(chat_completion_chunks(cid, created, model, pieces, calls,
                                                        usage if include_usage else None, ensure_ascii=False),
                                 media_type="text/event-stream")

    return app


REFUSAL = ("wemcp-standin: WEMCP_ENV=production: the development stand-in model is never run in production; "
           "register a real provider with POST /api/v1/model-providers")


async def chat_completion_chunks(cid: str, created: int, model: str, pieces: Sequence[str],
                                 calls: Sequence[dict[str, Any]], usage: dict[str, Any] | None, *,
                                 ensure_ascii: bool = True) -> AsyncIterator[bytes]:
    """A chat completion streamed as OpenAI's server-sent ``chat.completion.chunk`` events, as real
    providers cut it: the role, the content a piece at a time, each tool call's name and then its
    arguments in two halves, the finish reason, the usage (when given) and ``[DONE]``. Also the
    testkit's scripted model (wemcp.testkit.model) streams with it."""

    def event(data: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(data, ensure_ascii=ensure_ascii).encode() + b"\n\n"

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return event({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    yield chunk({"role": "assistant", "content": ""})
    for piece in pieces:
        yield chunk({"content": piece})
        await asyncio.sleep(0)
    for i, c in enumerate(calls):
        args = c["function"]["arguments"]
        yield chunk({"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                                     "function": {"name": c["function"]["name"], "arguments": ""}}]})
        half = len(args) // 2
        for part in (args[:half], args[half:]):
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
    yield chunk({}, "tool_calls" if calls else "stop")
    if usage is not None:
        yield event({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wemcp.devstack.standin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    args = parser.parse_args(argv)
    if production():
        print(REFUSAL, file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        print("wemcp-standin: listens on loopback only (--host 127.0.0.1)", file=sys.stderr)
        return 2
    import uvicorn

    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
