"""The web console in a real browser (Playwright driving Debian's chromium, `make browser-tools`)
against the whole platform: a server published through the API is found from the marketplace,
its page shows its tools and connect snippets, the guide and the API reference render from this
origin only. Every page: no console errors, no horizontal scrolling at 375 px, no serious or critical
axe-core violations; a screenshot of each lands in $WEMCP_TEST_OUTPUT/console (default
.data/test-output/console)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import pytest_asyncio

from tests.e2e.console_kit import OUT, open_page, signed_in, signin_link
from tests.e2e.e2e_kit import published, superadmin_key, user_key
from wemcp.devstack.sources import stdio_server
from wemcp.devstack.stack import Stack
from wemcp.devstack.testing import wait_for

pytestmark = pytest.mark.e2e

TIME_VERSION = "2026.10.19"


@pytest_asyncio.fixture(scope="module")
async def clock(stack: Stack, gateway_url: str) -> dict[str, Any]:
    """A real server (mcp-server-time from PyPI), published through the API by a trusted publisher."""
    admin = {"Authorization": f"Bearer {superadmin_key(stack, 'e2e-console-admin')}"}
    tag = uuid.uuid4().hex[:6]
    server_json = {"name": f"io.github.e2e-console/clock-{tag}", "title": f"Console Clock {tag}",
                   "description": "当前时间与时区转换 — current time in any IANA time zone.",
                   "version": TIME_VERSION,
                   "packages": [{"registryType": "pypi", "identifier": "mcp-server-time", "version": TIME_VERSION,
                                 "transport": {"type": "stdio"}}]}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as c:
        r = await c.post("/api/v1/servers", json={"server_json": server_json}, headers=admin)
        assert r.status_code == 202, r.text
        return await published(c, r.json()["slug"], admin)


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("width", [1440, 375])
async def test_marketplace_search_server_page_and_guide(browser: Any, clock: dict[str, Any], gateway_url: str,
                                                        width: int) -> None:
    p = await open_page(browser, width)
    page = p.page
    # the first page a new user sees is the marketplace, in Chinese
    await page.goto(gateway_url + "/")
    await page.get_by_role("heading", level=1).filter(has_text="发现、托管并调用").wait_for()
    await page.get_by_role("searchbox").fill(clock["title"])
    await page.get_by_role("button", name="搜索").click()
    card = page.locator("section.results").get_by_role("link", name=clock["title"], exact=True)
    await card.wait_for()
    await p.check(f"market-{width}")

    await card.click()
    await page.wait_for_url(f"**/servers/{clock['slug']}")
    await page.get_by_role("heading", name="get_current_time").wait_for()
    assert await page.get_by_role("heading", name="convert_time").count() == 1
    await p.check(f"server-{width}")

    # try a tool from the page: a form from its input schema, called through the gateway
    tool = page.locator("li", has=page.get_by_role("heading", name="get_current_time"))
    await tool.get_by_text("试用").click()
    await tool.get_by_label("timezone").fill("Asia/Shanghai")
    await tool.get_by_role("button", name="调用").click()
    result = page.get_by_test_id("try-result-get_current_time")
    await result.wait_for()
    assert "Asia/Shanghai" in await result.inner_text()
    assert "计入每日免费额度" in await tool.inner_text()
    await p.check(f"server-try-{width}")

    await page.get_by_role("tab", name="连接").click()
    snippet = page.locator("pre", has_text=f"/mcp/{clock['slug']}").first
    await snippet.wait_for()
    assert f"{gateway_url}/mcp/{clock['slug']}" in (await page.locator("#panel-1").inner_text())
    await p.check(f"server-connect-{width}")

    # English on request, kept across pages
    await page.get_by_role("button", name="Switch to English").click()
    await page.get_by_role("tab", name="Connect").wait_for()
    await page.get_by_role("link", name="Docs").click()
    await page.get_by_role("heading", name="Getting started / 快速开始").wait_for()
    await page.get_by_role("link", name="SDKs").click()
    await page.get_by_role("heading", name="SDKs", level=1).wait_for()
    await p.check(f"guide-{width}")


@pytest.mark.asyncio(loop_scope="session")
async def test_api_reference_renders_with_no_internet(browser: Any, gateway_url: str) -> None:
    p = await open_page(browser, 1440)
    requests: list[str] = []
    p.page.on("request", lambda r: requests.append(r.url))
    await p.page.goto(gateway_url + "/docs")
    await p.page.locator(".opblock-tag").first.wait_for(timeout=30_000)  # the operations, from /openapi.json
    await p.page.screenshot(path=str(OUT / "api-reference.png"))
    assert requests and all(u.startswith(gateway_url) or u.startswith("data:") for u in requests), requests
    assert not p.errors, p.errors


@pytest.mark.asyncio(loop_scope="session")
async def test_sign_in_with_a_link_create_use_and_revoke_a_key(browser: Any, stack: Stack, gateway_url: str) -> None:
    user_id, _ = await user_key(stack, "e2e-console")
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as c:
        login = (await c.get("/api/v1/me", headers={"Authorization": f"Bearer {_}"})).json()["login"]
    p = await open_page(browser, 1440)
    page = p.page
    await page.goto(gateway_url + "/signin")
    await page.get_by_role("heading", name="登录 WeMcp").wait_for()
    await p.check("signin-1440")

    link = signin_link(stack, gateway_url, login)
    await page.goto(link)
    await page.wait_for_url("**/account")
    assert "token" not in page.url
    await page.get_by_role("heading", name=login, level=1).wait_for()
    await page.get_by_label("名称").fill("laptop")
    await page.get_by_role("button", name="创建", exact=True).click()
    key = (await page.get_by_test_id("new-key").inner_text()).strip()
    assert key.startswith("wmk_")
    await page.get_by_role("cell", name="laptop", exact=True).wait_for()
    await p.check("account-1440")
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as c:
        me = await c.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200 and me.json()["id"] == user_id

        # a reload keeps the session (auth's refresh cookie), the page keeps no token
        await page.reload()
        await page.get_by_role("cell", name="laptop", exact=True).wait_for()
        stored = await page.evaluate("JSON.stringify({...localStorage}) + JSON.stringify({...sessionStorage})")
        assert "wmk_" not in stored and "eyJ" not in stored, stored

        await page.get_by_role("button", name="吊销 laptop").click()
        await page.get_by_role("cell", name="laptop", exact=True).wait_for(state="detached")

        async def refused() -> bool | None:
            r = await c.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})
            return True if r.status_code == 401 else None

        await wait_for(refused, timeout=5)

    await page.get_by_role("button", name="退出").click()
    await page.get_by_role("link", name="登录").wait_for()
    assert not p.errors, p.errors
    # the link worked once
    await page.goto(link)
    await page.get_by_role("alert").wait_for()
    assert "used" in await page.get_by_role("alert").inner_text()


ECHO_SERVER = stdio_server("console-echo")


@pytest.mark.asyncio(loop_scope="session")
async def test_publish_shows_inputs_then_an_archive_deploys_live(browser: Any, stack: Stack, gateway_url: str,
                                                               tmp_path: Path) -> None:
    from wemcp.devstack.testing import tar_gz

    _, key = await user_key(stack, "e2e-publisher")
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as c:
        headers = {"Authorization": f"Bearer {key}"}
        login = (await c.get("/api/v1/me", headers=headers)).json()["login"]
        own = (await c.get("/api/v1/names/mine", headers=headers)).json()["platform_namespace"]
    p = await signed_in(browser, stack, gateway_url, login)
    page = p.page
    await page.get_by_role("link", name="发布").click()
    await page.get_by_role("heading", name="发布 MCP 服务器").wait_for()
    # a config as people paste it: what it needs is shown before anything is submitted
    await page.get_by_label("配置").fill(
        '{"mcpServers": {"baidu-map": {"command": "npx", "args": ["-y", "@baidumap/mcp-server-baidu-map"],'
        ' "env": {"BAIDU_MAP_API_KEY": "xxx"}}}}')
    detected = page.locator("li", has_text="BAIDU_MAP_API_KEY")
    await detected.first.wait_for()
    assert "密钥" in await detected.first.inner_text()
    await p.check("publish-1440")

    # a source archive, uploaded from the page, deploys while the page follows it
    archive = tmp_path / "echo.tar.gz"
    archive.write_bytes(tar_gz({"server.py": ECHO_SERVER, "requirements.txt": "mcp==2.3.0\n"}))
    name = f"{own}/console-echo-{uuid.uuid4().hex[:6]}"
    await page.get_by_text("或者上传源码包").click()
    await page.get_by_label("清单").fill(
        f'{{"name": "{name}", "version": "1.0.0", "runtime": "python", "entrypoint": "server.py"}}')
    await page.get_by_label("源码包").set_input_files(str(archive))
    await page.get_by_role("button", name="上传").click()
    await page.get_by_role("heading", name="部署").wait_for(timeout=60_000)
    await page.get_by_text("部署成功。").wait_for(timeout=300_000)
    steps = await page.locator("ol.steps").inner_text()
    for step in ("installing", "introspecting", "deployed"):
        assert step in steps, steps
    await p.check("publish-deployed-1440")
    await page.get_by_role("link", name="打开服务器页面").click()
    await page.get_by_role("heading", name="echo", exact=True).wait_for()
    # my servers lists it, published
    await page.goto(gateway_url + "/publish")
    row = page.get_by_role("row", name=name.split("/")[-1])
    await row.wait_for()
    assert "已发布" in await row.inner_text()
    assert not p.errors, p.errors


@pytest.mark.asyncio(loop_scope="session")
async def test_admin_approves_a_submission_and_the_superadmin_publishes_an_announcement(
        browser: Any, stack: Stack, gateway_url: str) -> None:
    from tests.e2e.e2e_kit import submit_archive

    superadmin = superadmin_key(stack, "e2e-console-root")
    _, key = await user_key(stack, "e2e-newcomer", trusted=False)  # not a trusted publisher: reviewed
    tag = uuid.uuid4().hex[:6]
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as c:
        newcomer = {"Authorization": f"Bearer {key}"}
        own = (await c.get("/api/v1/names/mine", headers=newcomer)).json()["platform_namespace"]
        sub = await submit_archive(c, newcomer, {"name": f"{own}/reviewed-{tag}", "version": "1.0.0",
                                                 "runtime": "python", "entrypoint": "server.py"},
                                   {"server.py": ECHO_SERVER, "requirements.txt": "mcp==2.3.0\n"})
        assert sub["status"] == "pending_review", sub
        root_login = (await c.get("/api/v1/me", headers={"Authorization": f"Bearer {superadmin}"})).json()["login"]

        p = await signed_in(browser, stack, gateway_url, root_login)
        page = p.page
        await page.get_by_role("link", name="管理").click()
        await page.get_by_role("heading", name="审核队列").wait_for()
        item = page.locator(f"li[data-slug='{sub['slug']}']")
        await item.wait_for()
        await item.get_by_text("规格、包与输入").click()
        await item.locator("pre").wait_for()
        assert "server.py" in await item.locator("pre").inner_text()
        await p.check("admin-1440")
        await item.get_by_role("button", name="批准").click()
        await page.get_by_role("status").filter(has_text="已批准").wait_for()
        await item.wait_for(state="detached")

        async def left_review() -> str | None:
            r = await c.get(f"/api/v1/servers/{sub['slug']}", headers=newcomer)
            return r.json()["status"] if r.json()["status"] != "pending_review" else None
        assert await wait_for(left_review, 15) in ("submitted", "deploying", "published")

        # the superadmin writes an announcement (its own admin tab); it appears on the marketplace for everyone
        await page.get_by_role("navigation", name="管理分区").get_by_role("link", name="公告").click()
        title = f"维护通知 {tag}"
        await page.locator("#ann-title-zh").fill(title)
        await page.locator("#ann-title-en").fill(f"Maintenance {tag}")
        await page.locator("#ann-body-zh").fill("今晚 23:00 短暂维护。")
        await page.get_by_role("button", name="发布公告").click()
        await page.get_by_text("公告已发布。").wait_for()
        assert not p.errors, p.errors

        anon = await open_page(browser, 375)
        await anon.page.goto(gateway_url + "/")

        async def shown() -> bool | None:
            await anon.page.reload()
            await anon.page.locator("section.panel").first.wait_for()
            text = await anon.page.locator("aside").inner_text()
            return True if f"Maintenance {tag}" in text or title in text else None
        assert await wait_for(shown, 20)
        await anon.check("market-announcement-375")
