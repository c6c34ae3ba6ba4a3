"""Configs as people paste them, end to end, every service a real process: unpinned `npx`/`uvx`
configs resolved against the real npm registry and PyPI at submission, deployed by the real deployer
at the exact version resolved, and followed through the gateway as server-sent events
(`/api/v1/deployments/{slug}/events`), readable by the owner and admins only."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx2 as httpx
import pytest

from tests.e2e.e2e_kit import new_account, published, superadmin_key, user_key
from wemcp.devstack.stack import Stack
from wemcp.devstack.testing import wait_for
from wemcp.testkit.sse import json_events

pytestmark = pytest.mark.e2e

BAIDU = {"mcpServers": {"baidu-map": {"command": "npx", "args": ["-y", "@baidumap/mcp-server-baidu-map"],
                                      "env": {"BAIDU_MAP_API_KEY": "xxx"}}}}
TIME = {"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"]}}}
EVERYTHING = {"mcpServers": {"everything": {"command": "npx",
                                            "args": ["-y", "@modelcontextprotocol/server-everything"]}}}
EXACT = re.compile(r"^\d+\.\d+\.\d+$")


async def follow(c: httpx.AsyncClient, slug: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """The deployment's events through the gateway, until the stream ends (the final state). The
    deployment exists once the deployer has consumed ``server.submitted`` (moments after the 202)."""

    async def exists() -> bool:
        return (await c.get(f"/api/v1/deployments/{slug}", headers=headers)).status_code == 200

    await wait_for(exists, timeout=60, interval=0.2)
    buf = ""
    async with c.stream("GET", f"/api/v1/deployments/{slug}/events", headers=headers, timeout=600) as r:
        assert r.status_code == 200, (await r.aread())
        assert r.headers["content-type"].startswith("text/event-stream")
        async for chunk in r.aiter_text():
            buf += chunk
    events = json_events(buf)
    assert events and events[-1]["event"] == "done", buf[-2000:]
    return events


async def submit(c: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]) -> tuple[str, str]:
    """A config submitted as pasted (202): the server's slug and the version it was resolved to."""
    r = await c.post("/api/v1/servers", json=body, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()["slug"], r.json()["version"]


async def declared_tools(package: str, version: str) -> set[str]:
    """What the package at that version declares, asked outside the platform's introspection: the
    files the deployer installed (its marker names the command) run directly and listed by the
    official MCP client over stdio."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    from wemcp.deployer.config import Settings
    from wemcp.deployer.install import _safe

    prefix = Settings().data_path / "pkgs" / "npm" / f"{_safe(package)}@{_safe(version)}"
    argv = json.loads((prefix / ".wemcp.json").read_text())["argv"]
    params = StdioServerParameters(command=argv[0], args=argv[1:], env={"PATH": "/usr/bin:/bin"}, cwd=str(prefix))
    async with stdio_client(params) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        return {t.name for t in (await s.list_tools()).tools}


async def test_the_seed_example_is_accepted_as_pasted_and_deploys(stack: Stack, gateway_url: str):
    owner = (await new_account(stack, "e2e-baidu", trusted=True)).headers
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as c:
        slug, version = await submit(c, BAIDU, owner)
        assert EXACT.match(version), version
        d = (await c.get(f"/api/v1/servers/{slug}", headers=owner)).json()
        assert d["spec"]["packages"][0]["version"] == version
        assert d["spec"]["resolved"][0]["requested"] == "latest"
        # it exits without BAIDU_MAP_API_KEY: listed with the placeholder, deployed at that version
        done = (await follow(c, slug, owner))[-1]["data"]
        assert done["status"] == "deployed" and done["package_version"] == version, done
        assert done["tools"], done
        detail = await published(c, slug, owner)
        assert detail["version"] == version and {t["name"] for t in detail["tools"]} == set(done["tools"])


async def test_uvx_config_resolves_and_its_deployment_streams(stack: Stack, gateway_url: str):
    # submitted by an admin: other e2e tests list mcp-server-time as their own user first, and only an
    # admin may submit a package another user listed (the same release is then that listing)
    owner = admin = {"Authorization": f"Bearer {superadmin_key(stack, 'e2e-resolve-admin')}"}
    _, other_key = await user_key(stack, "e2e-stranger")
    other = {"Authorization": f"Bearer {other_key}"}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as c:
        # uvx mcp-server-time: resolved, deployed at that version, followed live through the gateway
        slug, version = await submit(c, TIME, owner)
        assert EXACT.match(version)
        events = await follow(c, slug, owner)
        assert (await c.get(f"/api/v1/deployments/{slug}/events")).status_code == 401
        assert (await c.get(f"/api/v1/deployments/{slug}/events", headers=other)).status_code == 404
        steps = [e["data"]["step"] for e in events if e["event"] == "step"]
        assert steps[0] == "queued" and "installing" in steps and steps[-1] == "deployed", steps
        done = events[-1]["data"]
        assert done["status"] == "deployed" and done["package_version"] == version
        assert {"get_current_time", "convert_time"} <= set(done["tools"])
        replay = await follow(c, slug, admin)  # finished: replayed, then the end
        assert [e["data"].get("step") for e in replay if e["event"] == "step"] == steps
        detail = await published(c, slug, owner)
        assert detail["version"] == version and {t["name"] for t in detail["tools"]} >= {"get_current_time"}


async def test_server_everything_unpinned_deploys_with_every_tool_it_declares(stack: Stack, gateway_url: str):
    owner = (await new_account(stack, "e2e-everything", trusted=True)).headers
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as c:
        # npx -y @modelcontextprotocol/server-everything: every tool its resolved version declares
        slug, version = await submit(c, EVERYTHING, owner)
        done = (await follow(c, slug, owner))[-1]["data"]
        assert done["status"] == "deployed" and done["package_version"] == version, done
        declared = await declared_tools("@modelcontextprotocol/server-everything", version)
        assert set(done["tools"]) == declared and len(declared) >= 5, (done["tools"], declared)


async def test_stdio_local_is_listed_with_its_config_and_never_routed(stack: Stack, gateway_url: str):
    owner = (await new_account(stack, "e2e-local", trusted=True)).headers
    body = {"mcpServers": {"clock": {"command": "uvx", "args": ["mcp-server-time", "--local-timezone", "UTC"]}},
            "transport": "stdio-local"}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as c:
        slug, version = await submit(c, body, owner)
        done = (await follow(c, slug, owner))[-1]["data"]
        assert done["status"] == "deployed" and done["backend"] == "unhosted" and done["endpoint"] is None, done
        detail = await published(c, slug, owner)
        assert {t["name"] for t in detail["tools"]} == {"get_current_time", "convert_time"}
        entry = detail["connect"]["config"]["mcpServers"][slug]
        assert detail["connect"]["runs"] == "local" and detail["connect"]["url"] is None
        assert entry == {"command": "uvx", "args": [f"mcp-server-time=={version}", "--local-timezone", "UTC"]}

        # the gateway learns the route from the stream on its own, a moment after the catalog
        async def refused_as_local() -> httpx.Response | None:
            call = await c.post(f"/mcp/{slug}", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                headers={**owner, "mcp-protocol-version": "2026-07-28"})
            return call if "no server" not in call.text else None
        call = await wait_for(refused_as_local, 15, interval=0.1)
        assert call.status_code == 404 and "users' machines" in call.text, call.text
