"""The console's management pages in a real browser against the whole platform: an admin changes a
user's role and bans them (their key stops working), lists servers by status and disables then
enables one, edits a category, starts a crawl and sees it listed, reads the request logs and the audit
log; a merchant sees their product, its plans and usage, raises a plan and grants it; a plain user
gets no admin or merchant navigation, those pages say "not allowed" (and the API refuses them), and
they edit and withdraw their own server. Every page is checked at 1440 and 375 px (no console
errors, no serious or critical axe-core violations, no sideways scrolling; a screenshot under
$WEMCP_TEST_OUTPUT/console)."""
# ruff: noqa: RUF001 (the console speaks Chinese: its full-width punctuation is meant)

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2 as httpx
import pytest
import pytest_asyncio
from playwright.async_api import expect

from tests.e2e.console_kit import Page, signed_in
from tests.e2e.e2e_kit import new_account, submit_archive, user_key
from wemcp.common.events.calls import McpCallCompleted, McpCallsCompleted
from wemcp.devstack.stack import Stack
from wemcp.devstack.testing import wait_for
from wemcp.testkit.catalog import publish

pytestmark = pytest.mark.e2e

WIDTHS = (1440, 375)
SERVER_PY = 'from mcp.server.mcpserver import MCPServer\napp = MCPServer("x")\n'


async def account(stack: Stack, role: str) -> dict[str, Any]:
    """An account with ``role``: its id, login and the headers with its platform API key."""
    made = await new_account(stack, f"e2e-m-{role}", role)
    return {"id": made.id, "login": made.login, "headers": made.headers}


async def pending_server(c: httpx.AsyncClient, who: dict[str, Any], stem: str) -> str:
    """A submission by a publisher who is not trusted: it waits for review (nothing deploys)."""
    own = (await c.get("/api/v1/names/mine", headers=who["headers"])).json()["platform_namespace"]
    sub = await submit_archive(c, who["headers"], {"name": f"{own}/{stem}-{uuid.uuid4().hex[:6]}", "version": "1.0.0",
                                                   "runtime": "python", "entrypoint": "server.py"},
                               {"server.py": SERVER_PY, "requirements.txt": "mcp==2.3.0\n"})
    assert sub["status"] == "pending_review", sub
    return str(sub["slug"])


async def failed_server(c: httpx.AsyncClient, who: dict[str, Any]) -> str:
    """A remote server whose host does not resolve, by a trusted publisher: its deployment fails."""
    own = (await c.get("/api/v1/names/mine", headers=who["headers"])).json()["platform_namespace"]
    server_json = {"name": f"{own}/unreachable-{uuid.uuid4().hex[:6]}", "version": "1.0.0",
                   "description": "a remote server on a host that does not exist",
                   "remotes": [{"type": "streamable-http", "url": "https://e2e-console.invalid/mcp"}]}
    r = await c.post("/api/v1/servers", json={"server_json": server_json}, headers=who["headers"])
    assert r.status_code == 202, r.text
    slug = str(r.json()["slug"])

    async def failed() -> bool | None:
        d = (await c.get(f"/api/v1/servers/{slug}", headers=who["headers"])).json()
        assert d["status"] != "published", d
        return True if d["status"] == "failed" else None

    await wait_for(failed, 60, interval=0.5)
    return slug


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(stack: Stack, gateway_url: str) -> AsyncIterator[dict[str, Any]]:
    """An admin, a merchant with a public agent (their product) and two plain users; three calls to
    the agent as the gateway reports them (for the merchant's usage and the admin's request log)."""
    people = {role: await account(stack, role) for role in ("admin", "merchant", "user")}
    people["target"] = await account(stack, "user")
    _, key = await user_key(stack, "e2e-m-publisher")  # a trusted publisher: no review
    people["publisher"] = {"headers": {"Authorization": f"Bearer {key}"}}
    tag = uuid.uuid4().hex[:6]
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as c:
        async def keys_answer() -> bool:  # on a busy machine the first key lookups can find auth still warming up
            return (await c.get("/api/v1/me", headers=people["merchant"]["headers"])).status_code == 200

        await wait_for(keys_answer, 30, interval=0.5)
        r = await c.post("/api/v1/agents", headers=people["merchant"]["headers"],
                         json={"name": f"Trip planner {tag}", "description": "plans trips", "model": "scripted-1",
                               "visibility": "public", "owner_kind": "merchant"})
        assert r.status_code == 201, r.text
        agent = r.json()["id"]

        async def product() -> dict[str, Any] | None:
            r = await c.get("/api/v1/merchant/products", headers=people["merchant"]["headers"])
            items = [p for p in r.json()["items"] if p["slug"] == agent and p["status"] == "listed"]
            return items[0] if items else None

        prod = await wait_for(product, 30)
    calls = [McpCallCompleted(user_id=uuid.UUID(people["user"]["id"]), server_slug=f"agent-{agent}",
                              agent_id=uuid.UUID(agent), method="tools/call", tool="plan", status=status,
                              latency_ms=5.0) for status in ("ok", "ok", "refused")]
    batch = McpCallsCompleted(gateway="e2e", calls=calls)
    assert stack.nats_url
    await publish(stack.nats_url, batch)
    yield {**people, "product": prod, "agent": agent, "tag": tag}


@pytest.fixture(scope="module")
def empty_registry(stack: Stack) -> Iterator[str]:
    """The crawler pointed at a registry stand-in on loopback (a real HTTP server with no servers),
    restored to the stack's settings afterwards."""

    class Registry(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"servers": [], "metadata": {"count": 0}}).encode()
            self.send_response(200 if self.path.startswith("/v0.1/servers") else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    svc = stack.services["crawler"]
    saved = dict(svc.env)
    base = f"http://127.0.0.1:{server.server_port}"
    svc.env = {**saved, "WEMCP_CRAWLER_REGISTRY_URL": base, "WEMCP_CRAWLER_CRAWL_SOURCES": '["registry"]',
               "WEMCP_EGRESS_ALLOW": "127.0.0.1", "WEMCP_CRAWLER_CRAWL_REQUEST_INTERVAL_SECONDS": "0"}
    stack.restart_service("crawler", wait=60)
    try:
        yield base
    finally:
        server.shutdown()
        svc.env = saved
        stack.restart_service("crawler", wait=60)


async def check_both(p: Page, name: str) -> None:
    """The page as it is, wide and narrow (the same session: a sign-in link works once)."""
    for width in WIDTHS:
        await p.page.set_viewport_size({"width": width, "height": 900})
        await p.check(f"{name}-{width}")
    await p.page.set_viewport_size({"width": WIDTHS[0], "height": 900})


@pytest.mark.asyncio(loop_scope="session")
async def test_admin_manages_users_servers_categories_crawls_logs_and_audit(
        browser: Any, stack: Stack, gateway_url: str, world: dict[str, Any], empty_registry: str) -> None:
    admin, target = world["admin"], world["target"]
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as c:
        slug = await pending_server(c, world["user"], "reviewed")
        p = await signed_in(browser, stack, gateway_url, admin["login"])
        page = p.page
        nav = page.locator("#nav")
        assert await nav.get_by_role("link", name="管理", exact=True).count() == 1
        await nav.get_by_role("link", name="管理", exact=True).click()
        await page.get_by_role("heading", name="审核队列", level=2).wait_for()
        tabs = page.get_by_role("navigation", name="管理分区")
        # an admin, not the superadmin: no announcements tab
        assert await tabs.get_by_role("link", name="公告").count() == 0
        await check_both(p, "admin-review")

        # users: find one, make them a merchant, ban them; their key stops working
        await tabs.get_by_role("link", name="用户").click()
        await page.get_by_label("登录名、名称或邮箱").fill(target["login"])
        await page.get_by_role("button", name="搜索").click()
        await page.get_by_text("共 1 位用户").wait_for()
        row = page.locator(f"tr[data-user='{target['login']}']")
        assert await page.locator("tr[data-user]").count() == 1
        await check_both(p, "admin-users")
        await row.get_by_label(f"角色 {target['login']}", exact=True).select_option("merchant")
        # the admin's own rank bounds the choice: user and merchant only
        assert await row.locator("option").all_inner_texts() == ["用户", "商家"]
        await row.get_by_role("button", name=f"设置角色 {target['login']}").click()
        await page.get_by_role("status").filter(has_text="角色已改为商家").wait_for()
        assert (await c.get("/api/v1/me", headers=target["headers"])).json()["role"] == "merchant"
        await row.get_by_label("封禁理由").fill("spam calls")
        await row.get_by_role("button", name=f"封禁 {target['login']}").click()
        await page.get_by_role("status").filter(has_text="已封禁").wait_for()
        await row.get_by_text("已封禁: spam calls").wait_for()

        async def refused() -> int | None:
            r = await c.get("/api/v1/me", headers=target["headers"])
            return r.status_code if r.status_code in (401, 403) else None

        await wait_for(refused, 20)

        # servers by status: the waiting submission (the review queue decides it: no disable here);
        # a failed one, disabled with a reason, then enabled again
        await tabs.get_by_role("link", name="服务器").click()
        status = page.get_by_label("状态")
        await status.wait_for()
        await status.select_option("pending_review")
        srow = page.locator(f"tr[data-slug='{slug}']")
        await srow.wait_for()
        assert "等待审核" in await srow.inner_text()
        assert await srow.get_by_role("button").count() == 0
        await check_both(p, "admin-servers")
        broken = await failed_server(c, world["publisher"])
        await status.select_option("failed")
        frow = page.locator(f"tr[data-slug='{broken}']")
        await frow.get_by_label("停用理由").fill("checking")
        await frow.get_by_role("button", name=f"停用 {broken}").click()
        await page.get_by_role("status").filter(has_text=f"{broken} 已停用").wait_for()
        await frow.wait_for(state="detached")  # no longer among the failed
        await status.select_option("disabled")
        await frow.get_by_role("button", name=f"启用 {broken}").click()
        await page.get_by_role("status").filter(has_text=f"{broken} 已启用").wait_for()
        assert (await c.get(f"/api/v1/servers/{broken}", headers=world["publisher"]["headers"])).json()["status"] \
            in ("submitted", "deploying", "failed")

        # categories: create one, rename it, delete it
        cat = f"e2e-{world['tag']}"
        await tabs.get_by_role("link", name="分类").click()
        await page.get_by_text("新建分类").click()
        await page.locator("#cat-new-slug").fill(cat)
        await page.locator("#cat-new-name").fill("测试分类")
        await page.get_by_role("button", name="创建分类").click()
        crow = page.locator(f"tr[data-category='{cat}']")
        await crow.wait_for()
        await check_both(p, "admin-categories")
        await crow.get_by_text("编辑").click()
        await crow.get_by_label("名称").fill("测试分类（改）")
        await crow.get_by_role("button", name="保存分类").click()
        await page.get_by_role("status").filter(has_text="测试分类（改）").wait_for()
        names = {x["slug"]: x["name"] for x in (await c.get("/api/v1/categories")).json()["items"]}
        assert names[cat] == "测试分类（改）"
        await page.locator(f"tr[data-category='{cat}']").get_by_role("button", name="删除 测试分类（改）").click()
        await page.locator(f"tr[data-category='{cat}']").wait_for(state="detached")

        # crawls: start one (against the registry stand-in) and see it listed
        await tabs.get_by_role("link", name="抓取").click()
        await page.get_by_label("来源").select_option("registry")
        await page.get_by_role("button", name="立即抓取").click()
        await page.get_by_role("status").filter(has_text="已开始抓取：registry").wait_for()
        run = page.locator("tr[data-run]").filter(has_text="管理员发起").first
        await run.wait_for()
        runs = (await c.get("/api/v1/admin/crawls", headers=admin["headers"])).json()["items"]
        assert runs and runs[0]["trigger"] == "admin" and runs[0]["source"] == "registry"
        await check_both(p, "admin-crawls")

        # request logs: every call (the admins' view), here the merchant's agent's
        await tabs.get_by_role("link", name="请求日志").click()
        await page.get_by_label("服务器").fill(f"agent-{world['agent']}")

        async def logged() -> int | None:
            await page.get_by_role("button", name="搜索").click()
            n = await page.locator("tr[data-call]").count()
            return n if n == 3 else None

        assert await wait_for(logged, 30, interval=0.5) == 3
        assert world["user"]["id"] in await page.locator("tbody").inner_text()
        await check_both(p, "admin-logs")

        # the audit log: the role change and the ban, read-only
        await tabs.get_by_role("link", name="审计日志").click()
        await page.get_by_label("操作前缀").fill("user.")

        async def audited() -> bool | None:
            await page.get_by_role("button", name="搜索").click()
            text = await page.locator("#main").inner_text()
            return True if "user.role_change" in text and "user.ban" in text and target["id"] in text else None

        await wait_for(audited, 30, interval=0.5)
        assert await page.locator("#main button", has_text="删除").count() == 0
        await check_both(p, "admin-audit")
        assert not p.errors, p.errors


@pytest.mark.asyncio(loop_scope="session")
async def test_merchant_sees_products_usage_and_raises_a_plan(browser: Any, stack: Stack, gateway_url: str,
                                                              world: dict[str, Any]) -> None:
    merchant, prod = world["merchant"], world["product"]
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as c:
        async def counted() -> dict[str, Any] | None:
            r = await c.get(f"/api/v1/merchant/products/{prod['id']}/usage", headers=merchant["headers"])
            return r.json() if r.json()["days"] else None

        usage = await wait_for(counted, 30)
        p = await signed_in(browser, stack, gateway_url, merchant["login"])
        page = p.page
        assert await page.locator("#nav").get_by_role("link", name="管理", exact=True).count() == 0
        await page.locator("#nav").get_by_role("link", name="商家", exact=True).click()
        await page.get_by_role("heading", name="商家中心", level=1).wait_for()
        card = page.locator(f"article[data-product='{prod['id']}']")
        await card.get_by_role("heading", name=f"Trip planner {world['tag']}").wait_for()
        await card.locator("tr[data-plan='free']").wait_for()
        overall = page.get_by_test_id("usage-all")
        assert "3 次调用，其中 1 次被拒绝" in await overall.inner_text()
        assert await overall.get_by_role("img").count() == 1  # the chart, named by its title and summary
        await check_both(p, "merchant")

        # the product's own usage, with its table
        await card.get_by_text("每日用量").click()
        figure = card.locator("figure.usage")
        await figure.wait_for()
        await figure.get_by_text("以表格查看").click()
        day = usage["days"][0]["day"]
        assert [r.split() for r in await figure.locator("tbody tr").all_inner_texts()] == [[day, "3", "1", "1"]]

        # a raised plan, edited, then granted to a user
        await card.get_by_text("新增提升套餐").click()
        new = f"#p-{prod['id'][:8]}-new"
        await page.locator(f"{new}-code").fill("pro")
        await page.locator(f"{new}-name").fill("Pro")
        await page.locator(f"{new}-calls").fill("500")
        await page.locator(f"{new}-price").fill("19")
        await card.get_by_role("button", name="新增套餐").click()
        pro = card.locator("tr[data-plan='pro']")
        await pro.wait_for()
        assert "19.00 CNY / 月" in await pro.inner_text()
        await pro.get_by_text("编辑").click()
        await pro.get_by_label("每人每日调用次数（留空表示不限）").fill("800")
        await pro.get_by_role("button", name="保存套餐").click()
        await card.get_by_role("status").filter(has_text="套餐 Pro 已保存").wait_for()
        await card.locator("tr[data-plan='pro'] td").nth(2).filter(has_text="800").wait_for()
        await card.get_by_label("用户 ID").fill(world["user"]["id"])
        await card.get_by_role("button", name="授予", exact=True).click()
        await card.get_by_role("status").filter(has_text="已授予").wait_for()
        holder = card.locator(f"tr[data-holder='{world['user']['id']}']")
        await holder.get_by_role("cell", name="Pro").wait_for()
        await check_both(p, "merchant-plans")
        granted = (await c.get(f"/api/v1/merchant/products/{prod['id']}/entitlements",
                               headers=merchant["headers"])).json()["items"]
        assert [(g["user_id"], g["plan"]["code"], g["plan"]["calls_per_day"]) for g in granted] == \
            [(world["user"]["id"], "pro", 800)]
        await holder.get_by_role("button", name=f"收回 {world['user']['id']}").click()
        await card.get_by_role("status").filter(has_text="已收回").wait_for()
        await holder.wait_for(state="detached")
        assert (await c.get(f"/api/v1/merchant/products/{prod['id']}/entitlements",
                            headers=merchant["headers"])).json()["items"] == []
        assert not p.errors, p.errors


@pytest.mark.asyncio(loop_scope="session")
async def test_plain_user_is_refused_admin_and_merchant_and_manages_own_servers(
        browser: Any, stack: Stack, gateway_url: str, world: dict[str, Any]) -> None:
    user, other = world["user"], world["merchant"]
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as c:
        slug = await pending_server(c, user, "mine")
        # the API refuses what the console hides
        h = user["headers"]
        for method, path in (("GET", "/api/v1/merchant/products"), ("GET", "/api/v1/merchant/usage"),
                             ("GET", f"/api/v1/merchant/products/{world['product']['id']}/usage"),
                             ("GET", "/api/v1/admin/users"), ("GET", "/api/v1/admin/servers"),
                             ("GET", "/api/v1/admin/categories"), ("GET", "/api/v1/admin/crawls"),
                             ("POST", "/api/v1/admin/crawls"), ("GET", "/api/v1/admin/audit"),
                             ("GET", "/api/v1/logs/calls?view=all"),
                             ("POST", f"/api/v1/admin/users/{other['id']}/ban"),
                             ("PUT", f"/api/v1/admin/users/{other['id']}/role"),
                             ("POST", f"/api/v1/servers/{slug}/disable")):
            body = {"reason": "nope"} if path.endswith("/ban") else {"role": "admin"} if path.endswith("/role") \
                else {} if method == "POST" else None
            r = await c.request(method, path, headers=h, json=body)
            assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert (await c.get("/api/v1/merchant/products")).status_code == 401
        # another user's server: neither edited nor withdrawn
        for method, path, body in (("PATCH", f"/api/v1/servers/{slug}", {"title": "taken"}),
                                   ("POST", f"/api/v1/servers/{slug}/withdraw", None)):
            r = await c.request(method, path, headers=other["headers"], json=body)
            assert r.status_code in (403, 404), (path, r.status_code)
        assert (await c.get(f"/api/v1/servers/{slug}", headers=h)).json()["status"] == "pending_review"

        p = await signed_in(browser, stack, gateway_url, user["login"])
        page = p.page
        nav = page.locator("#nav")
        await nav.get_by_role("link", name="发布").wait_for()
        assert await nav.get_by_role("link", name="管理", exact=True).count() == 0
        assert await nav.get_by_role("link", name="商家", exact=True).count() == 0
        for path, name in (("/admin", "admin-denied"), ("/merchant", "merchant-denied")):
            await page.goto(gateway_url + path)
            await page.get_by_role("alert").filter(has_text="无权访问").wait_for()
            await check_both(p, name)

        # my servers: edit the title and description, then withdraw
        await page.goto(gateway_url + "/publish")
        await page.get_by_text(f"编辑 {slug}").click()
        title = page.locator(f"[id='edit-{slug}-title']")
        # the form starts from the server's own text: saving is possible once it has loaded
        await expect(page.get_by_role("button", name="保存", exact=True)).to_be_enabled()
        await title.fill(f"My tool {world['tag']}")
        await page.locator(f"[id='edit-{slug}-desc']").fill("它能做的事 — what it does.")
        await page.get_by_role("button", name="保存", exact=True).click()
        await page.get_by_role("status").filter(has_text=f"{slug} 已保存").wait_for()
        d = (await c.get(f"/api/v1/servers/{slug}", headers=h)).json()
        assert (d["title"], d["description"]) == (f"My tool {world['tag']}", "它能做的事 — what it does.")
        await page.get_by_role("link", name=f"My tool {world['tag']}").wait_for()
        await check_both(p, "publish-mine")

        async def confirm(dialog: Any) -> None:
            assert "不再列出" in dialog.message
            await dialog.accept()

        page.once("dialog", confirm)
        await page.get_by_role("button", name=f"撤回 {slug}").click()
        await page.get_by_role("status").filter(has_text=f"{slug} 已撤回").wait_for()
        assert (await c.get(f"/api/v1/servers/{slug}", headers=h)).json()["status"] == "disabled"
        assert await page.get_by_role("button", name=f"撤回 {slug}").count() == 0
        assert not p.errors, p.errors
