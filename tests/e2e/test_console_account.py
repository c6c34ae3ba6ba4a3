"""My account, invite links and a server's own key in the console, in a real browser (Playwright driving
Debian's chromium) against the whole platform: one signed-in page for the module (resized for the
375 px checks), one hosted server that needs an upstream key. An own key is saved write-only and seen
masked — never in full in the page or in any response; try-it switches from the platform's key to it;
a connect snippet gets a NEW key scoped to the server; usage (chart, table, quota) matches the API
after calls; the request log pages and filters; the connections list shows a configured third party
and starts connecting; an invite link shows what it grants and is accepted. Every page: no console
errors, axe-core clean, no sideways scrolling, a screenshot under $WEMCP_TEST_OUTPUT/console."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import pytest_asyncio

from tests.e2e.console_kit import Page, open_page, signed_in
from tests.e2e.e2e_kit import published, submit_archive, superadmin_key, user_key
from wemcp.devstack.stack import Stack
from wemcp.devstack.testing import wait_for

pytestmark = pytest.mark.e2e

KEYED = textwrap.dedent('''
    import hashlib, os
    from mcp.server.mcpserver import MCPServer

    app = MCPServer("keyed")

    @app.tool()
    def whoami() -> str:
        """A fingerprint of the upstream key this server was started with (never the key)."""
        return "key:" + hashlib.sha256(os.environ.get("KEYED_API_KEY", "").encode()).hexdigest()[:12]

    if __name__ == "__main__":
        app.run()
''')
SYSTEM_KEY = "sk-platform-console-0001"
OWN_KEY = "sk-own-console-secret-7f3a9c"


def fingerprint(key: str) -> str:
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass
class World:
    url: str
    user_id: str
    login: str
    key: str  # the user's platform API key, made by the fixture: never shown by the console
    slug: str
    app_slug: str
    app_name: str
    invite_url: str
    page: Page
    bodies: list[str] = field(default_factory=list)  # every API response body the page received

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(browser: Any, stack: Stack, gateway_url: str) -> AsyncIterator[World]:
    t_start = time.monotonic()
    admin = {"Authorization": f"Bearer {await asyncio.to_thread(superadmin_key, stack, 'e2e-account-root')}"}
    user_id, key = await user_key(stack, "e2e-account")
    tag = uuid.uuid4().hex[:6]
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as c:
        me = {"Authorization": f"Bearer {key}"}
        login = (await c.get("/api/v1/me", headers=me)).json()["login"]
        own = (await c.get("/api/v1/names/mine", headers=me)).json()["platform_namespace"]
        sub = await submit_archive(c, me, {"name": f"{own}/keyed-{tag}", "version": "1.0.0", "runtime": "python",
                                           "entrypoint": "server.py",
                                           "environmentVariables": [{"name": "KEYED_API_KEY", "isSecret": True,
                                                                     "isRequired": True}]},
                                   {"server.py": KEYED, "requirements.txt": "mcp==2.3.0\n"})
        # the platform's key for it, as an admin sets it: try-it works before the user saves their own
        r = await c.put("/api/v1/vault/system", headers=admin,
                        json={"server": sub["slug"], "name": "KEYED_API_KEY", "value": SYSTEM_KEY})
        assert r.status_code == 200, r.text
        app_slug, app_name = f"netdisk-{tag}", f"百度网盘 Baidu Netdisk {tag}"
        r = await c.post("/api/v1/oauth/apps", headers=admin, json={
            "slug": app_slug, "name": app_name, "authorize_url": "https://openapi.baidu.com/oauth/2.0/authorize",
            "token_url": "https://openapi.baidu.com/oauth/2.0/token", "client_id": f"console-{tag}",
            "client_secret": "console-client-secret", "scope": "basic,netdisk", "servers": [sub["slug"]]})
        assert r.status_code == 201, r.text
        r = await c.post("/api/v1/invites", headers=admin, json={"role": "merchant"})
        assert r.status_code == 201, r.text
        invite_url = r.json()["url"].replace("http://127.0.0.1:8000", gateway_url)
        assert "#code=wmi_" in invite_url, invite_url

        # the one sign-in of the module while the server deploys
        p = await signed_in(browser, stack, gateway_url, login)
        w = World(gateway_url, user_id, login, key, sub["slug"], app_slug, app_name, invite_url, p)
        await p.page.get_by_role("heading", name=login, level=1).wait_for()
        t0 = time.monotonic()
        await published(c, sub["slug"], me)
        print(f"\nthe keyed server published {time.monotonic() - t0:.1f} s after the sign-in")

    async def keep(r: Any) -> None:
        if "/api/v1/" in r.url:
            with contextlib.suppress(Exception):  # a redirect or an aborted request has no body to keep
                w.bodies.append(await r.text())
    p.page.on("response", keep)
    print(f"the module's set-up took {time.monotonic() - t_start:.1f} s")
    yield w
    await p.page.context.close()


async def both_widths(w: World, name: str, ready: Any = None) -> None:
    """The page checked at 1440 px, then at 375 px, back to 1440."""
    page = w.page.page
    for width in (1440, 375):
        await page.set_viewport_size({"width": width, "height": 900})
        if ready is not None:
            await ready()
        await w.page.check(f"{name}-{width}")
    await page.set_viewport_size({"width": 1440, "height": 900})


def never_in_full(w: World, secret: str, dom: str) -> None:
    assert secret not in dom
    assert not [b for b in w.bodies if secret in b], "a response carried the secret"


@pytest.mark.asyncio(loop_scope="session")
async def test_server_page_own_key_try_it_and_a_minted_snippet_key(world: World) -> None:
    w, page = world, world.page.page
    await page.goto(f"{w.url}/servers/{w.slug}")
    own = page.locator("section.own-key")
    await own.get_by_role("heading", name="我自己的上游密钥").wait_for()
    await own.get_by_text("调用将使用平台密钥").wait_for()
    tool = page.locator("li", has=page.get_by_role("heading", name="whoami"))
    await tool.get_by_text("试用").click()
    await tool.get_by_role("button", name="调用").click()
    result = page.get_by_test_id("try-result-whoami")
    await result.filter(has_text=fingerprint(SYSTEM_KEY)).wait_for()
    assert "平台密钥" in await tool.inner_text()

    # my own key, write-only: the field is a password field, emptied after saving; only a mask comes back
    field_ = own.get_by_label("KEYED_API_KEY 的值")
    assert await field_.get_attribute("type") == "password"
    await field_.fill(OWN_KEY)
    await own.get_by_role("button", name="保存密钥").click()
    await own.get_by_role("status").filter(has_text="已保存 KEYED_API_KEY").wait_for()
    await own.get_by_text("调用将使用您自己的密钥。").wait_for()
    assert await field_.input_value() == ""
    masked = await own.get_by_test_id("vault-table").inner_text()
    assert "KEYED_API_KEY" in masked and f"****{OWN_KEY[-4:]}" in masked
    never_in_full(w, OWN_KEY, await page.content())

    # try-it now runs on my key (the gateway drops its cached values on auth's change event)
    async def on_my_key() -> bool | None:
        await tool.get_by_role("button", name="调用").click()
        await result.wait_for()
        return True if fingerprint(OWN_KEY) in await result.inner_text() else None
    await wait_for(on_my_key, timeout=15, interval=0.3)
    assert "不计额度" in await tool.inner_text()
    await both_widths(w, "server-own-key")

    # connect: the snippets carry a placeholder until a NEW key scoped to this server is asked for
    await page.get_by_role("tab", name="连接").click()
    panel = page.locator("#panel-1")
    await panel.get_by_text("${WEMCP_API_KEY}").first.wait_for()
    before = {k["id"] for k in await _keys(w)}
    await panel.get_by_role("button", name="在配置中填入新密钥").click()
    await page.get_by_test_id("minted-key").wait_for()
    text = "\n".join(await panel.locator("pre").all_inner_texts())
    assert "${WEMCP_API_KEY}" not in text and "Bearer wmk_" in text
    assert w.key not in await page.content()  # my existing key stays unshown
    new = [k for k in await _keys(w) if k["id"] not in before]
    assert len(new) == 1 and new[0]["servers"] == [w.slug], new
    assert f"Bearer {new[0]['prefix']}" in text
    await both_widths(w, "server-connect-key")


async def _keys(w: World) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=w.url, timeout=30) as c:
        r = await c.get("/api/v1/api-keys", headers=w.auth)
        assert r.status_code == 200, r.text
        return [k for k in r.json()["items"] if not k["revoked_at"]]


@pytest.mark.asyncio(loop_scope="session")
async def test_account_shows_my_keys_connections_usage_and_request_log(world: World) -> None:
    w, page = world, world.page.page
    async with httpx.AsyncClient(base_url=w.url, timeout=30) as c:
        # my calls on the platform's key: my own deleted (through the API) until the gateway uses the
        # platform's again, then 22 calls (more than a page of the log), then my own saved back
        r = await c.delete("/api/v1/vault", params={"server": w.slug, "name": "KEYED_API_KEY"}, headers=w.auth)
        assert r.status_code == 204, r.text

        async def call() -> str:
            r = await c.post(f"/api/v1/servers/{w.slug}/tools/whoami/call", json={"arguments": {}}, headers=w.auth)
            assert r.status_code == 200, r.text
            return r.json()["result"]["content"][0]["text"]

        async def on_system_key() -> bool:
            return await call() == fingerprint(SYSTEM_KEY)
        await wait_for(on_system_key, timeout=15, interval=0.2)
        for _ in range(21):
            assert await call() == fingerprint(SYSTEM_KEY)
        r = await c.put("/api/v1/vault", json={"server": w.slug, "name": "KEYED_API_KEY", "value": OWN_KEY},
                        headers=w.auth)
        assert r.status_code == 200 and OWN_KEY not in r.text

        # usage and the log are written from the gateway's call records, after the calls answered: the
        # figures are settled when the three views agree, count every call above, and hold still for a poll
        # (the earlier test's try-it clicks add a number of calls only the records know)
        seen: list[int] = []

        async def settled() -> tuple[dict[str, Any], dict[str, Any]] | None:
            days = (await c.get("/api/v1/me/usage/days", headers=w.auth)).json()
            today = (await c.get("/api/v1/me/usage", headers=w.auth)).json()
            logs = (await c.get("/api/v1/logs/calls", params={"limit": 100}, headers=w.auth)).json()
            mine = [s["calls"] for s in today["servers"] if s["id"] == w.slug]
            counts = {days["days"][-1]["calls"], len(logs["items"]), *mine}
            total = counts.pop() if len(counts) == 1 and mine else -1
            seen.append(total)
            done = total >= 24 and seen[-2:] == [total, total]
            return (days, today) if done else None
        days, today = await wait_for(settled, timeout=30, interval=0.5)

    await page.goto(f"{w.url}/account")
    await page.get_by_role("heading", name="我自己的上游密钥").wait_for()
    # my own upstream key: listed masked, never in full
    vault = page.get_by_test_id("vault-table")
    await vault.get_by_role("cell", name=w.slug, exact=True).wait_for()
    never_in_full(w, OWN_KEY, await page.content())

    # usage: the chart, its table and the quota match the API
    chart = page.get_by_test_id("usage-chart")
    await chart.wait_for()
    bars = await chart.locator("g.bar").evaluate_all(
        "gs => gs.map(g => [g.dataset.day, Number(g.dataset.calls)])")
    assert bars == [[d["day"], d["calls"]] for d in days["days"]]
    assert len(bars) == 30
    rows = await page.get_by_test_id("usage-table").locator("tbody tr").evaluate_all(
        "rs => rs.map(r => [...r.children].map(c => c.textContent))")
    last = days["days"][-1]
    assert rows[-1] == [last["day"], str(last["calls"]), str(last["metered"]), str(last["own_key"]),
                        str(last["refused"])]
    mine = next(s for s in today["servers"] if s["id"] == w.slug)
    row = page.get_by_test_id("quota-servers").locator(f"tr[data-id='{w.slug}']")
    cells = await row.locator("td").all_inner_texts()
    assert cells == [str(mine["calls"]), str(mine["own_key"]), str(mine["used"]), str(mine["limit"]),
                     str(mine["remaining"])]
    assert mine["used"] >= 23 and mine["remaining"] == mine["limit"] - mine["used"]  # 22 here, 1 tried

    # the connections list: the configured third party, not connected; connecting goes to it
    conn = page.locator(f"li[data-app='{w.app_slug}']")
    await conn.get_by_text("未连接").wait_for()
    await both_widths(w, "account")

    # my request log: 20 a page, newest first, older and newer, and the API's filters
    logs = page.get_by_test_id("logs-table")
    await logs.wait_for()
    first = await logs.locator("tbody tr").evaluate_all("rs => rs.map(r => r.dataset.id)")
    assert len(first) == 20
    await page.get_by_role("button", name="较早").click()
    await logs.locator(f"tr[data-id='{first[0]}']").wait_for(state="detached")
    second = await logs.locator("tbody tr").evaluate_all("rs => rs.map(r => r.dataset.id)")
    assert second and not set(second) & set(first)
    await page.get_by_role("button", name="较新").click()
    await logs.locator(f"tr[data-id='{first[0]}']").wait_for()
    await page.get_by_label("状态").select_option("refused")
    await page.get_by_role("button", name="筛选").click()
    await page.get_by_text("没有符合条件的请求。").wait_for()
    await page.get_by_label("状态").select_option("ok")
    await page.get_by_label("工具", exact=True).fill("whoami")
    await page.get_by_role("button", name="筛选").click()
    await logs.wait_for()
    assert set(await logs.locator("tbody td:nth-child(5)").all_inner_texts()) == {"成功"}
    assert w.slug in await logs.inner_text()
    # the same filters, exported: every matching call as the API's CSV
    async with page.expect_download() as dl:
        await page.get_by_role("button", name="导出 CSV").click()
    csv_rows = Path(await (await dl.value).path()).read_text().splitlines()
    assert csv_rows[0].startswith("at,id,caller,server,method,tool")
    assert len(csv_rows) - 1 >= 23 and all(f",{w.slug}," in r and ",whoami," in r for r in csv_rows[1:])
    await both_widths(w, "account-logs")

    # connecting: auth's authorization URL for this browser; the third party is not reachable here
    hops: list[str] = []

    async def third_party(route: Any) -> None:
        hops.append(route.request.url)
        await route.fulfill(status=200, content_type="text/html", body="<!doctype html><title>Baidu</title>")
    await page.route("https://openapi.baidu.com/**", third_party)
    await conn.get_by_role("button", name=f"连接 {w.app_name}").click()
    await page.wait_for_url("https://openapi.baidu.com/**")
    assert hops and f"client_id=console-{w.app_slug.split('-')[-1]}" in hops[0] and "state=" in hops[0], hops
    await page.goto(f"{w.url}/account")
    await page.get_by_role("heading", name="我的请求日志").wait_for()
    # only now: the stand-in page's own late requests (its favicon) must not reach the real host,
    # whose name does not resolve here, and land in the page's console errors the next test checks
    await page.unroute("https://openapi.baidu.com/**")


@pytest.mark.asyncio(loop_scope="session")
async def test_an_invite_link_shows_what_it_grants_and_is_accepted(world: World, browser: Any) -> None:
    w, page = world, world.page.page
    # signed out: sign in first (the code stays in the fragment)
    anon = await open_page(browser, 375)
    await anon.page.goto(w.invite_url)
    await anon.page.get_by_text("然后接受邀请").wait_for()
    await anon.check("invite-signed-out-375")
    await anon.page.context.close()

    await page.goto(w.invite_url)
    card = page.get_by_test_id("invite")
    await card.wait_for()
    assert "商家" in await card.inner_text() and w.login in await card.inner_text()
    assert "#code" not in page.url  # the code left the address bar
    await both_widths(w, "invite", ready=lambda: card.wait_for())
    await page.get_by_role("button", name="接受邀请").click()
    await page.get_by_test_id("invite-done").filter(has_text="商家").wait_for()
    async with httpx.AsyncClient(base_url=w.url, timeout=30) as c:
        assert (await c.get("/api/v1/me", headers=w.auth)).json()["role"] == "merchant"
    await w.page.check("invite-accepted-1440")
    # the link worked once
    await page.goto(w.invite_url)
    await page.get_by_role("alert").filter(has_text="已用完").wait_for()
