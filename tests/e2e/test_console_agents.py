"""Agents in the web console, in a real browser (Playwright driving Debian's chromium) against the
whole platform, with the development stand-ins wired exactly as `make run` wires them
(`wemcp.devstack.dev.start`: the stand-in model provider as a supervised process of the stack,
registered through the admin API; the demo server submitted as an archive by the development
platform account and deployed by the real deployer into the sandbox).

A user signs in, creates an agent from the stand-in model and the demo server (found by searching
the catalog), chats with it (the reply streams, the MCP tool call shows as a step, the answer uses
the tool's result), reads its MCP URL (which answers an MCP client), edits and deletes it; at 1440 and
375 px, each page checked (no errors, axe, no sideways scrolling, a screenshot). Another user's agent
is refused, and re-running the stand-ins' set-up (a restart of `make run`) changes nothing but the
stand-in's address."""

# ruff: noqa: RUF001  (Chinese punctuation in Chinese text is intended)
from __future__ import annotations

import uuid
from typing import Any

import httpx2 as httpx
import pytest
import pytest_asyncio

from tests.e2e.console_kit import open_page, signed_in, signin_link
from tests.e2e.e2e_kit import published, user_key
from wemcp.devstack import dev
from wemcp.devstack.stack import Stack

pytestmark = pytest.mark.e2e


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def standins(stack: Stack, gateway_url: str) -> dict[str, Any]:
    """What `make run` does once the services are healthy, then the demo server until it is published."""
    seeded = dev.start(stack)
    key = (stack.data_dir / dev.KEY_FILE).read_text().strip()
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as c:
        demo = await published(c, seeded.demo_slug, {"Authorization": f"Bearer {key}"})
    return {"seeded": seeded, "demo": demo, "key": key}


async def _me(gateway_url: str, key: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as c:
        r = await c.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        return dict(r.json())


async def test_make_run_wires_the_stand_in_and_the_demo_server_idempotently(
        stack: Stack, gateway_url: str, standins: dict[str, Any]) -> None:
    seeded, demo, key = standins["seeded"], standins["demo"], standins["key"]
    admin = {"Authorization": f"Bearer {key}"}
    assert (await _me(gateway_url, key))["login"] == dev.PLATFORM_LOGIN
    assert "demo" in demo["title"].lower() and "demo" in demo["description"].lower()
    assert {t["name"] for t in demo["tools"]} == {"echo", "add", "current_time", "greet"}
    # a restart of `make run`: the stand-in comes back on another port, the set-up runs again
    stack.services["standin"].stop()
    again = dev.start(stack)
    assert (again.provider_id, again.demo_slug) == (seeded.provider_id, seeded.demo_slug)
    assert (stack.data_dir / dev.KEY_FILE).read_text().strip() == key  # the same account and key
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as c:
        providers = [p for p in (await c.get("/api/v1/model-providers", headers=admin)).json()
                     if p["name"] == dev.PROVIDER]
        assert len(providers) == 1 and providers[0]["base_url"] == stack.services["standin"].url + "/v1"
        assert providers[0]["has_api_key"] is False
        models = (await c.get("/v1/models")).json()["data"]
        assert {"id": "dev-stand-in", "owned_by": "dev-stand-in"}.items() <= next(
            m for m in models if m["id"] == "dev-stand-in").items()
        mine = (await c.get("/api/v1/me/servers", headers=admin)).json()["items"]
        assert [s["slug"] for s in mine if s["name"] == dev.demo_manifest()["name"]] == [seeded.demo_slug]
        # the provider registration is an admin's: a plain user is refused
        _, plain = await user_key(stack, "e2e-agents-plain")
        r = await c.post("/api/v1/model-providers", headers={"Authorization": f"Bearer {plain}"},
                         json={"name": "mine", "base_url": "http://127.0.0.1:1/v1", "models": ["x"]})
        assert r.status_code == 403, r.text


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("width", [1440, 375])
async def test_create_an_agent_chat_with_it_and_read_its_mcp_url(
        browser: Any, stack: Stack, gateway_url: str, standins: dict[str, Any], width: int) -> None:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    demo = standins["demo"]
    _, key = await user_key(stack, "e2e-agents")
    login = (await _me(gateway_url, key))["login"]
    p = await signed_in(browser, stack, gateway_url, login, width)
    page = p.page
    if width < 600:  # the nav wraps; the link is there all the same
        await page.goto(gateway_url + "/agents")
    else:
        await page.get_by_role("link", name="智能体").click()
    await page.get_by_role("heading", name="我的智能体", level=1).wait_for()
    await page.get_by_text("还没有智能体。").wait_for()
    await p.check(f"agents-{width}")

    # create: a model from the providers (the stand-in, marked), a server found in the catalog
    await page.get_by_role("link", name="新建智能体").click()
    await page.get_by_role("heading", name="新建智能体", level=1).wait_for()
    name = f"演示助手 {uuid.uuid4().hex[:4]}"
    await page.get_by_label("名称").fill(name)
    model = page.get_by_label("模型")
    assert await model.input_value() == "dev-stand-in"
    assert "开发环境替身，不是真正的模型" in await model.locator("option:checked").inner_text()
    await page.get_by_label("在目录中搜索服务器").fill("Demo tools")
    await page.get_by_role("button", name="搜索").click()
    await page.get_by_role("button", name=f"添加 {demo['title']}").click()
    chosen = page.get_by_role("list", name="已选的服务器")
    await chosen.get_by_text(demo["slug"], exact=True).wait_for()
    await p.check(f"agents-new-{width}")
    await page.get_by_role("button", name="创建智能体").click()
    await page.wait_for_url("**/agents/*-*")
    agent_id = page.url.rsplit("/", 1)[-1]
    await page.get_by_role("heading", name=name, level=1).wait_for()
    assert (await page.get_by_test_id("stand-in-badge").first.inner_text()) == "开发环境替身，不是真正的模型"

    # chat: the stand-in calls the demo server's add tool through the platform, then answers with it
    await page.get_by_label("消息").fill("add 2 and 40")
    await page.get_by_role("button", name="发送").click()
    answer = page.get_by_test_id("agent-answer").last
    await page.get_by_test_id("tool-step").first.wait_for(timeout=60_000)
    step = await page.get_by_test_id("tool-step").first.inner_text()
    assert f"{demo['slug']}.add" in step and '{"a":2,"b":40}' in step and "42" in step, step
    await page.locator(".chat-log li.assistant p.muted").wait_for(state="detached")  # the run finished
    assert "42" in await answer.inner_text() and "stand-in" in await answer.inner_text()
    # a second turn, in Chinese: the tool picked by what it answers
    await page.get_by_label("消息").fill("请问候 Ada")
    await page.get_by_role("button", name="发送").click()
    await page.get_by_test_id("tool-step").nth(1).wait_for(timeout=60_000)
    await page.locator(".chat-log li.assistant p.muted").wait_for(state="detached")
    assert "greet" in await page.get_by_test_id("tool-step").nth(1).inner_text()
    assert "你好，Ada！" in await answer.inner_text() and "不是真正的模型" in await answer.inner_text()

    # its MCP URL, with connect snippets, answers an MCP client with the user's key
    mcp_url = (await page.get_by_test_id("agent-mcp-url").inner_text()).strip()
    assert mcp_url == f"{gateway_url}/mcp/agents/{agent_id}"
    await p.check(f"agent-chat-{width}")
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60)
    async with http, Client(streamable_http_client(mcp_url, http_client=http)) as client:
        tools = (await client.list_tools()).tools
        assert len(tools) == 1 and tools[0].input_schema["properties"].keys() == {"message"}

    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as c:
        # another user's id is refused (not even its existence is told); anonymous is 401
        _, other = await user_key(stack, "e2e-agents-other")
        theirs = {"Authorization": f"Bearer {other}"}
        assert (await c.get(f"/api/v1/agents/{agent_id}", headers=theirs)).status_code == 404
        r = await c.post(f"/v1/agents/{agent_id}/chat/completions", headers=theirs,
                         json={"messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 404, r.text
        assert (await c.delete(f"/api/v1/agents/{agent_id}", headers=theirs)).status_code == 404
        assert (await c.get(f"/api/v1/agents/{agent_id}")).status_code == 401

    if width < 600:
        # in English on request: the stand-in is still marked as one
        await page.get_by_role("button", name="Switch to English").click()
        await page.get_by_role("heading", name="MCP URL").wait_for()
        badge = page.get_by_test_id("stand-in-badge").first
        assert await badge.inner_text() == "development stand-in, not a real model"
        await p.check(f"agent-en-{width}")
        return
    # edit, then delete
    await page.get_by_text("编辑", exact=True).click()
    await page.locator("#agent-name").fill(name + " v2")
    await page.get_by_role("button", name="保存").click()
    await page.get_by_role("heading", name=name + " v2", level=1).wait_for()
    await page.get_by_role("button", name="删除智能体").click()
    await page.get_by_role("button", name="确认删除").click()
    await page.get_by_role("heading", name="我的智能体", level=1).wait_for()
    await page.get_by_text("还没有智能体。").wait_for()
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as c:
        gone = await c.get(f"/api/v1/agents/{agent_id}", headers={"Authorization": f"Bearer {key}"})
        assert gone.status_code == 404
    assert not p.errors, p.errors


@pytest.mark.asyncio(loop_scope="session")
async def test_signed_out_and_unknown_agents(browser: Any, stack: Stack, gateway_url: str) -> None:
    p = await open_page(browser, 375)
    await p.page.goto(gateway_url + "/agents")
    await p.page.get_by_text("您尚未登录。").wait_for()
    await p.check("agents-signed-out-375")
    _, key = await user_key(stack, "e2e-agents-lost")
    await p.page.goto(signin_link(stack, gateway_url, (await _me(gateway_url, key))["login"]))
    await p.page.wait_for_url("**/account")
    p.errors.clear()
    await p.page.goto(gateway_url + f"/agents/{uuid.uuid4()}")
    await p.page.get_by_role("alert").filter(has_text="没有这个智能体。").wait_for()
    # the API's 404 for the unknown id (and the browser's line about it), nothing else
    assert p.errors and all("404" in e for e in p.errors), p.errors
