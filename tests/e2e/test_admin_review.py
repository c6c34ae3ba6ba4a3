"""The admin system end to end through the gateway, with the real deployer: a new user's submission
waits in the review queue (nothing deployed) and deploys only after an admin approves it; the
approval and a ban land in one audit log (catalog's and auth's actions, stored by auth); a banned
user's next call — an API call and an MCP call — is refused within 1 s (measured)."""

from __future__ import annotations

import asyncio
import textwrap
import time

import httpx2 as httpx
import pytest

from tests.e2e.e2e_kit import published, submit_archive, superadmin_key, user_key
from wemcp.devstack.stack import Stack
from wemcp.devstack.testing import wait_for

pytestmark = pytest.mark.e2e

GREETER = textwrap.dedent('''
    from mcp.server.mcpserver import MCPServer

    app = MCPServer("greeter")

    @app.tool()
    def greet(name: str) -> str:
        """Say hello."""
        return f"hello {name}"

    if __name__ == "__main__":
        app.run()
''')
MANIFEST = {"name": "io.github.e2e-review/greeter", "version": "1.0.0", "runtime": "python",
            "entrypoint": "server.py", "description": "Greets whoever asks."}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_review_then_deploy_then_ban(stack: Stack, gateway_url: str):
    admin = bearer(superadmin_key(stack, "e2e-review-admin"))
    newbie_id, newbie_key = await user_key(stack, "e2e-newbie", trusted=False)
    newbie = bearer(newbie_key)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as c:
        # named in the newcomer's own namespace (io.github.<login> would need that GitHub account linked)
        own = (await c.get("/api/v1/names/mine", headers=newbie)).json()["platform_namespace"]
        sub = await submit_archive(c, newbie, {**MANIFEST, "name": f"{own}/greeter"},
                                   {"server.py": GREETER, "requirements.txt": "mcp==2.3.0\n"})
        slug = sub["slug"]
        assert sub["status"] == "pending_review", sub
        # nothing deploys while it waits: still pending a while later, and the deployer never heard of it
        await asyncio.sleep(3)
        d = (await c.get(f"/api/v1/servers/{slug}", headers=newbie)).json()
        assert d["status"] == "pending_review" and d["tools"] == []
        assert (await c.get(f"/api/v1/deployments/{slug}", headers=admin)).status_code == 404
        assert (await c.get(f"/api/v1/servers/{slug}")).status_code == 404  # not public

        assert (await c.get("/api/v1/admin/review", headers=newbie)).status_code == 403
        queue = (await c.get("/api/v1/admin/review", headers=admin)).json()
        assert slug in [i["slug"] for i in queue["items"]]
        item = (await c.get(f"/api/v1/admin/review/{slug}", headers=admin)).json()
        assert item["archive"]["runtime"] == "python" and item["owner_id"] == newbie_id
        assert (await c.post(f"/api/v1/admin/review/{slug}/approve", headers=newbie)).status_code == 403
        ok = await c.post(f"/api/v1/admin/review/{slug}/approve", json={"reason": "reviewed the source"},
                          headers=admin)
        assert ok.status_code == 200, ok.text

        t0 = time.monotonic()
        detail = await published(c, slug, newbie)
        print(f"\napprove → published through the real deployer: {time.monotonic() - t0:.1f} s")
        assert [t["name"] for t in detail["tools"]] == ["greet"]
        mcp_headers = {**newbie, "mcp-protocol-version": "2026-07-28", "accept": "application/json, text/event-stream"}
        listed = await c.post(f"/mcp/{slug}", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                                                    "params": {"_meta": {
                                                        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                                        "io.modelcontextprotocol/clientCapabilities": {}}}},
                              headers={**mcp_headers, "mcp-method": "tools/list"})
        assert listed.status_code == 200, listed.text
        assert (await c.get("/api/v1/me", headers=newbie)).status_code == 200  # warm in the gateway's cache

        ban = await c.post(f"/api/v1/admin/users/{newbie_id}/ban", json={"reason": "e2e ban"}, headers=admin)
        assert ban.status_code == 200, ban.text
        t0 = time.monotonic()
        while True:
            me = await c.get("/api/v1/me", headers=newbie)
            call = await c.post(f"/mcp/{slug}", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                                headers={**mcp_headers, "mcp-method": "tools/list"})
            if me.status_code == 401 and call.status_code == 401:
                break
            assert time.monotonic() - t0 < 1.0, f"a banned user still called after 1 s ({me.status_code}, " \
                                                f"{call.status_code})"
            await asyncio.sleep(0.02)
        print(f"ban → refused at the gateway: {time.monotonic() - t0:.3f} s")

        # one audit log: the catalog's approval and auth's ban, read through the gateway
        async def both() -> list[dict] | None:
            r = await c.get("/api/v1/admin/audit", headers=admin, params={"limit": 100})
            assert r.status_code == 200, r.text
            got = {(e["service"], e["action"], e["target_id"]) for e in r.json()["items"]}
            return r.json()["items"] if {("catalog", "review.approve", slug), ("auth", "user.ban", newbie_id)} \
                <= got else None
        await wait_for(both, timeout=20, interval=0.2)
        assert (await c.delete("/api/v1/admin/audit", headers=admin)).status_code == 405
