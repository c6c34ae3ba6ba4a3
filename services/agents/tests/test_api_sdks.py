"""The SDKs against the running platform (the real gateway in front): sdk/python (over the `openai`
client) and sdk/node (over the `openai` npm package; `npm install` then `node --test`)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from services.agents.tests.test_api_chat_completions import TIME_Q, check_time_answer

SDK = Path(__file__).resolve().parents[3] / "sdk"

from wemcp.devstack.testing import npm_install  # noqa: E402
from wemcp.sdk import AsyncWeMcp, mcp, mcp_calls, mcp_server  # noqa: E402


async def test_python_sdk(platform):
    await platform.add_provider()
    c = AsyncWeMcp(api_key=platform.user_token, base_url=platform.gateway, max_retries=0)
    assert str(c.base_url) == platform.gateway + "/v1/"
    done = await c.chat.completions.create(model="scripted-1", messages=[{"role": "user", "content": TIME_Q}],
                                           tools=[mcp("time", allowed_tools=["get_current_time", "convert_time"])])
    check_time_answer(done.choices[0].message.content)
    calls = mcp_calls(done)
    assert [(x.round, x.ref, x.tool, x.status) for x in calls] == [(1, "time", "get_current_time", "ok"),
                                                                   (2, "time", "convert_time", "ok")]
    from wemcp.testkit.agents import EXTERNAL_KEY
    done = await c.chat.completions.create(
        model="scripted-1", messages=[{"role": "user", "content": "ADD"}],
        tools=[mcp_server(platform.external, server_label="calc", headers={"X-Api-Key": EXTERNAL_KEY})])
    assert done.choices[0].message.content == "The sum is 42." and mcp_calls(done)[0].server == "calc"
    agent = await c.agents.create(name="Py Agent", model="scripted-1", mcp_servers=[{"ref": "time"}])
    reply = await c.agents.chat(agent["id"], [{"role": "user", "content": TIME_Q}])
    check_time_answer(reply.choices[0].message.content)
    assert (await c.agents.get(agent["id"]))["name"] == "Py Agent"
    assert (await c.agents.list())["total"] == 1
    await c.agents.delete(agent["id"])
    assert (await c.agents.list())["total"] == 0


async def _run(*cmd: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(errors="replace")


async def test_node_sdk(platform):
    assert shutil.which("node") and shutil.which("npm"), "node and npm are needed for the Node SDK test"
    node_dir = SDK / "node"
    await asyncio.to_thread(npm_install, node_dir, node_dir / "node_modules" / "openai", ci=False)
    await platform.add_provider()
    env = {**os.environ, "WEMCP_BASE_URL": platform.gateway, "WEMCP_API_KEY": platform.user_token,
           "WEMCP_MODEL": "scripted-1"}
    code, out = await _run("node", "--test", "test/", cwd=node_dir, env=env)
    assert code == 0, out[-4000:]
    assert "# pass 5" in out and "# fail 0" in out, out[-2000:]
    assert platform.upstream.calls.count("convert_time") == 3  # the Node client really drove the loop
