# ruff: noqa: RUF001  (Chinese punctuation in Chinese text is intended)
"""The development stand-ins of `make run` (wemcp.devstack.dev): the stand-in model provider, a real
OpenAI-compatible server driven here by the `openai` client (tool calls decided from the message,
streamed and not), its refusal in production, and the demo server as a real MCP server over stdio.
The whole wiring through the platform (provider registered, demo server deployed and chatted with)
is tests/e2e/test_console_agents.py."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from openai import OpenAI

from wemcp.devstack import cli, dev
from wemcp.devstack.stack import Stack
from wemcp.devstack.standin import MODEL, decide


# the demo server's tools as the agents service offers them to a model: <label>__<tool>
def _fn(name: str, description: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": f"demo-tools__{name}", "description": description,
                                             "parameters": {"type": "object", "properties": props,
                                                            "required": required}}}


DEMO_TOOLS: list[dict[str, Any]] = [
    _fn("echo", "Says the text back, unchanged (demo).", {"text": {"type": "string"}}, ["text"]),
    _fn("add", "Adds two numbers and returns the sum (demo).", {"a": {"type": "number"}, "b": {"type": "number"}},
        ["a", "b"]),
    _fn("current_time", "The current date and time in an IANA time zone such as Asia/Shanghai (demo).",
        {"timezone_name": {"type": "string", "default": "UTC"}}, []),
    _fn("greet", "Greets someone by name, in Chinese (lang=zh) or English (lang=en) (demo).",
        {"name": {"type": "string"}, "lang": {"type": "string", "default": "zh"}}, ["name"]),
]


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("standin")
    (data / "logs").mkdir()
    stack = Stack(data_dir=data)
    proc = dev.start_stand_in(stack)
    try:
        yield proc.url
    finally:
        proc.stop()


def test_refuses_to_start_in_production(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = subprocess.run([sys.executable, "-m", "wemcp.devstack.standin", "--port", "0"],
                         env={"PATH": "/usr/bin:/bin", "WEMCP_ENV": "production"}, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2, out
    assert "never run in production" in out.stderr
    monkeypatch.setenv("WEMCP_ENV", "production")
    stack = Stack(data_dir=tmp_path)
    for step in (lambda: dev.stand_in_process(stack), lambda: dev.seed(stack, "http://127.0.0.1:1", "http://x"),
                 lambda: dev.platform_key(stack, "http://127.0.0.1:1")):
        with pytest.raises(dev.StandInRefused):
            step()
    # make run's step after the services are healthy adds nothing in production
    assert "no development stand-ins" in cli._stand_ins(stack)
    assert stack.services == {} and not (tmp_path / dev.KEY_FILE).exists()


def test_answers_plainly_and_says_it_is_a_stand_in(standin: str) -> None:
    client = OpenAI(base_url=f"{standin}/v1", api_key="unused")
    assert [m.id for m in client.models.list()] == [MODEL]
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello there"}])
    text = r.choices[0].message.content or ""
    assert "stand-in" in text and "hello there" in text and r.choices[0].finish_reason == "stop"
    zh = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "你好呀"}], tools=DEMO_TOOLS)
    # a greeting in Chinese is what greet answers: a tool call, not text
    calls = zh.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["demo-tools__greet"]


def test_calls_the_tool_a_message_names_then_answers_with_its_result(standin: str) -> None:
    client = OpenAI(base_url=f"{standin}/v1", api_key="unused")
    messages: list[Any] = [{"role": "user", "content": "Please add 2 and 40"}]
    r = client.chat.completions.create(model=MODEL, messages=messages, tools=DEMO_TOOLS)
    call = (r.choices[0].message.tool_calls or [])[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "demo-tools__add" and json.loads(call.function.arguments) == {"a": 2, "b": 40}
    messages += [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                 {"role": "tool", "tool_call_id": call.id, "content": "42"}]
    done = client.chat.completions.create(model=MODEL, messages=messages, tools=DEMO_TOOLS)
    assert "42" in (done.choices[0].message.content or "") and done.choices[0].finish_reason == "stop"

    # streamed: the same decision, the call's arguments in pieces as real providers send them
    stream = client.chat.completions.create(model=MODEL, stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "echo: 你好 WeMcp"}],
                                            tools=DEMO_TOOLS)
    name, args, usage = "", "", None
    for chunk in stream:
        usage = chunk.usage or usage
        for ch in chunk.choices:
            for tc in ch.delta.tool_calls or []:
                name += tc.function.name or "" if tc.function else ""
                args += tc.function.arguments or "" if tc.function else ""
    assert name == "demo-tools__echo" and json.loads(args) == {"text": "你好 WeMcp"}
    assert usage is not None and usage.total_tokens > 0


def test_picks_a_tool_by_what_it_answers() -> None:
    def pick(q: str) -> tuple[str, dict[str, Any]]:
        d = decide({"messages": [{"role": "user", "content": q}], "tools": DEMO_TOOLS})
        name, raw = d["tool_calls"][0]
        return name, json.loads(raw)

    assert pick("What time is it in Asia/Tokyo?") == ("demo-tools__current_time", {"timezone_name": "Asia/Tokyo"})
    assert pick("现在几点？")[0] == "demo-tools__current_time"
    assert pick("greet Alice in English") == ("demo-tools__greet", {"name": "Alice in English", "lang": "en"})
    assert pick("3 加 4 等于多少")[1] == {"a": 3, "b": 4}
    assert pick("请问候 Ada") == ("demo-tools__greet", {"name": "Ada", "lang": "zh"})
    # nothing matches: a plain answer that lists the tools
    d = decide({"messages": [{"role": "user", "content": "tell me a story"}], "tools": DEMO_TOOLS})
    assert "tool_calls" not in d and "current_time" in d["content"]
    # after the result, in the language of the question
    d = decide({"messages": [{"role": "user", "content": "3 加 4"},
                             {"role": "assistant", "tool_calls": [
                                 {"id": "c1", "type": "function",
                                  "function": {"name": "demo-tools__add", "arguments": "{}"}}]},
                             {"role": "tool", "tool_call_id": "c1", "content": "7"}]})
    assert d["content"].endswith("工具 add 的结果：7") and "不是真正的模型" in d["content"]


def test_the_demo_archive_is_the_same_bytes_every_run() -> None:
    a, b = dev.demo_archive(), dev.demo_archive()
    assert a == b
    with tarfile.open(fileobj=io.BytesIO(a)) as tf:
        assert sorted(tf.getnames()) == ["requirements.txt", "server.py"]
    manifest = dev.demo_manifest()
    assert "demo" in manifest["title"].lower() and "demo" in manifest["description"].lower()
    assert manifest["entrypoint"] == "server.py" and manifest["runtime"] == "python"


async def test_the_demo_server_is_a_real_mcp_server() -> None:
    params = StdioServerParameters(command=sys.executable, args=[str(dev.DEMO_DIR / "server.py")])
    async with Client(params) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert tools == {"echo", "add", "current_time", "greet"}

        async def text(name: str, args: dict[str, Any]) -> str:
            r = await client.call_tool(name, args)
            assert not r.is_error, r
            return "".join(c.text for c in r.content if c.type == "text")

        assert await text("add", {"a": 2, "b": 40}) == "42"
        assert await text("echo", {"text": "你好"}) == "你好"
        assert (await text("greet", {"name": "Ada", "lang": "en"})).startswith("Hello, Ada!")
        assert (await text("greet", {"name": "Ada"})).startswith("你好，Ada")
        assert (await text("current_time", {"timezone_name": "Asia/Shanghai"})).endswith("+08:00")
