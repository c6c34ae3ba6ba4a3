# ruff: noqa: RUF001  (Chinese punctuation in Chinese text is intended)
"""The catalog end to end through the gateway, with the real deployer: a real PyPI server
(`mcp-server-time`) submitted as a server.json by a signed-in user (platform API key issued by auth)
→ the deployer installs, sandboxes and introspects it → the catalog publishes it with the real tool
list → search finds it (English, Chinese, a misspelled name) → a call through the gateway's MCP
router counts in the catalog (`mcp.call.completed`) → an admin disables it through the gateway →
gone from search within 1 s (measured) → enable → back. Also the registry feed's version endpoints
through the gateway."""

from __future__ import annotations

import time
from urllib.parse import quote

import httpx2 as httpx
import pytest

from tests.e2e.e2e_kit import published, superadmin_key, user_key
from wemcp.devstack.stack import Stack
from wemcp.devstack.testing import wait_for

pytestmark = pytest.mark.e2e

VERSION = "2026.10.19"
NAME = "io.github.modelcontextprotocol/time"
SERVER_JSON = {
    "name": NAME,
    "title": "Time 时间",
    "description": "获取任意时区的当前时间，并在时区之间换算时间。"
                   "Get the current time in any IANA time zone and convert times between zones.",
    "version": VERSION,
    "repository": {"url": "https://github.com/modelcontextprotocol/servers", "source": "github"},
    "packages": [{"registryType": "pypi", "identifier": "mcp-server-time", "version": VERSION,
                  "transport": {"type": "stdio"},
                  "packageArguments": [{"type": "named", "name": "--local-timezone", "value": "UTC"}]}],
}


async def test_real_pypi_server_through_gateway_and_deployer(stack: Stack, gateway_url: str):
    admin_key = superadmin_key(stack, "e2e-catalog-admin")
    user_id, owner_key = await user_key(stack, "e2e-owner")
    user = {"Authorization": f"Bearer {owner_key}"}
    admin = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as c:
        # identity comes from the credential, never from headers a client sets
        forged = await c.post("/api/v1/servers", json={"server_json": SERVER_JSON},
                              headers={"X-WeMcp-User-Id": user_id, "X-WeMcp-User-Role": "admin"})
        assert forged.status_code == 401, forged.text

        # names people can trust: the official name needs the modelcontextprotocol GitHub account
        # (or membership of that organisation); this user has none linked
        r = await c.post("/api/v1/servers", json={"server_json": SERVER_JSON}, headers=user)
        assert r.status_code == 403 and r.json()["namespace"] == "io.github.modelcontextprotocol", r.text
        own = (await c.get("/api/v1/names/mine", headers=user)).json()["platform_namespace"]
        name = f"{own}/time"  # the user's own namespace: theirs without proof
        r = await c.post("/api/v1/servers", json={"server_json": {**SERVER_JSON, "name": name},
                                                  "tags": ["time", "时间"]}, headers=user)
        assert r.status_code == 202, r.text
        acc = r.json()
        slug = acc["slug"]
        assert acc["status"] == "submitted" and acc["name"] == name

        t0 = time.monotonic()
        detail = await published(c, slug, user)
        print(f"\nsubmit → published through the real deployer: {time.monotonic() - t0:.1f} s")
        assert detail["owner_id"] == user_id
        assert {t["name"] for t in detail["tools"]} == {"get_current_time", "convert_time"}
        tool = next(t for t in detail["tools"] if t["name"] == "get_current_time")
        assert "timezone" in tool["input_schema"]["properties"], tool
        assert detail["connect"]["url"].endswith(f"/mcp/{slug}")
        # public once published: anonymous callers see it too
        assert (await c.get(f"/api/v1/servers/{slug}")).json()["tools"] == detail["tools"]

        async def top(q: str) -> list[str]:
            res = await c.post("/api/v1/servers/search", json={"query": q, "page_size": 10})
            assert res.status_code == 200, res.text
            return [i["slug"] for i in res.json()["items"]]

        for q in ("current time in a time zone", "时区 时间换算", "modelcontextprotcol/time"):  # English, Chinese, typo
            assert slug in await top(q), q

        # a real call through the gateway's MCP router counts in the catalog (mcp.call.completed)
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        http = httpx.AsyncClient(headers=user, timeout=httpx.Timeout(30.0, read=60.0))
        async with Client(streamable_http_client(f"{gateway_url}/mcp/{slug}", http_client=http)) as mcp:
            result = await mcp.call_tool("get_current_time", {"timezone": "Asia/Shanghai"})
            assert "Asia/Shanghai" in result.content[0].text
        await http.aclose()

        async def counted() -> int:
            return int((await c.get(f"/api/v1/servers/{slug}")).json()["calls"])
        assert await wait_for(counted, timeout=20, interval=0.1) >= 1
        res = await c.post("/api/v1/servers/search", json={"sort": "popular", "page_size": 1})
        assert [i["slug"] for i in res.json()["items"]] == [slug]

        # registry interoperability through the gateway
        versions = await c.get(f"/v0.1/servers/{quote(name, safe='')}/versions")
        assert versions.status_code == 200, versions.text
        assert [s["server"]["version"] for s in versions.json()["servers"]] == [VERSION]
        one = await c.get(f"/v0.1/servers/{quote(name, safe='')}/versions/{VERSION}")
        assert one.status_code == 200 and one.json()["server"]["packages"][0]["identifier"] == "mcp-server-time"

        # the owner cannot disable; an admin can, and search stops finding it within 1 s
        assert (await c.post(f"/api/v1/servers/{slug}/disable", headers=user)).status_code == 403
        t0 = time.perf_counter()
        r = await c.post(f"/api/v1/servers/{slug}/disable", json={"reason": "e2e"}, headers=admin)
        assert r.status_code == 200 and r.json()["status"] == "disabled", r.text

        async def gone() -> bool:
            return slug not in await top("current time in a time zone")
        await wait_for(gone, timeout=5)
        took = time.perf_counter() - t0
        print(f"e2e (gateway + real deployer) disable → gone from search: {took * 1000:.0f} ms")
        assert took < 1.0, f"took {took:.3f} s"
        assert (await c.get(f"/api/v1/servers/{slug}")).status_code == 404  # hidden from the public

        t0 = time.perf_counter()
        r = await c.post(f"/api/v1/servers/{slug}/enable", headers=admin)
        assert r.status_code == 200 and r.json()["status"] == "published", r.text

        async def back() -> bool:
            return slug in await top("current time in a time zone")
        await wait_for(back, timeout=5)
        print(f"enable → back in search: {(time.perf_counter() - t0) * 1000:.0f} ms")
