"""A server that refuses to start without its key (as the seed's baidu-map server does) is still
listed: the deployer starts it with a placeholder that is no secret; a caller's own value starts a
child of its own."""

from __future__ import annotations

import textwrap

import httpx2 as httpx
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from services.deployer.tests.deployer_testkit import bridge_headers, python_server
from wemcp.deployer.spec import INTROSPECTION_PLACEHOLDER

KEYED = textwrap.dedent('''
    import os, sys
    from mcp.server.mcpserver import MCPServer

    if not os.environ.get("DEMO_API_KEY"):
        print("DEMO_API_KEY environment variable is not set", file=sys.stderr)
        sys.exit(1)

    app = MCPServer("keyed")

    @app.tool()
    def key_suffix() -> str:
        """The last four characters of the key it was started with."""
        return os.environ["DEMO_API_KEY"][-4:]

    if __name__ == "__main__":
        app.run()
''')


async def test_a_server_that_needs_its_key_at_start_is_listed_with_a_placeholder(deployer, tmp_path):
    h = deployer
    keys = [{"name": "DEMO_API_KEY", "isSecret": True, "isRequired": True}]
    spec = python_server(tmp_path / "archives", "keyed.py", KEYED, environmentVariables=keys)
    d = await h.deploy("keyed", "Keyed", spec)
    assert [t["name"] for t in d["tools"]] == ["key_suffix"]
    # the listing child holds the placeholder; a caller's value starts a child of its own
    http = httpx.AsyncClient(headers={**bridge_headers(d["endpoint"]), "X-WeMcp-Env-DEMO-API-KEY": "real-key-7xQ9"},
                             timeout=30)
    async with Client(streamable_http_client(d["endpoint"], http_client=http), mode="legacy") as c:
        r = await c.call_tool("key_suffix", {})
        assert r.content[0].text == "7xQ9"
    children = h.orch.bridge.hosted["keyed"].children
    assert len(children) == 2  # the listing's and the caller's
    assert {c.command.env.get("DEMO_API_KEY") for c in children.values()} == {INTROSPECTION_PLACEHOLDER,
                                                                             "real-key-7xQ9"}
