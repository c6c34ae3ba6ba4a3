"""Servers hosted the way the deployer hosts users' servers, for the deployer's and the gateway's
tests: the deployer's bridge in the sandbox any machine can give, and the sources of the small stdio
servers (the official ``mcp`` SDK) they run behind it.

- ``WATCH``: talks outside any call — ``touch(uri)`` sends resources/updated (after
  resources/subscribe, which it accepts, for ``watch://a`` and ``watch://b``), ``grow`` sends
  tools/list_changed.
- ``BOOT``: ``boot`` answers an id of its process (a new one after a restart); ``wait_for_file(path)``
  answers once ``path`` exists (a call kept in flight for as long as the test wants)."""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path
from typing import Any

from wemcp.deployer import sandbox
from wemcp.deployer.bridge import Bridge, Hosted
from wemcp.deployer.child import Command

WATCH = textwrap.dedent('''
    import mcp_types as types
    from mcp.server.mcpserver import Context, MCPServer

    app = MCPServer("watch")

    @app.resource("watch://a")
    def a() -> str:
        return "a"

    @app.resource("watch://b")
    def b() -> str:
        return "b"

    @app.tool()
    async def touch(uri: str, ctx: Context) -> str:
        """Tells subscribers that ``uri`` changed."""
        await ctx.session.send_resource_updated(uri)
        return "touched"

    @app.tool()
    async def grow(ctx: Context) -> str:
        await ctx.session.send_tool_list_changed()
        return "grown"

    async def on_subscribe(ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
        return types.EmptyResult()

    app._lowlevel_server.add_request_handler("resources/subscribe", types.SubscribeRequestParams, on_subscribe)
    app._lowlevel_server.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, on_subscribe)

    if __name__ == "__main__":
        app.run()
''')
BOOT = textwrap.dedent("""
    import asyncio
    import uuid
    from pathlib import Path

    from mcp.server.mcpserver import MCPServer

    BOOT = uuid.uuid4().hex  # one per process
    app = MCPServer("boot")

    @app.tool()
    def boot() -> str:
        return BOOT

    @app.tool()
    async def wait_for_file(path: str) -> str:
        while not Path(path).exists():
            await asyncio.sleep(0.02)
        return BOOT

    if __name__ == "__main__":
        app.run()
""")


def local_bridge(run_dir: Path | None = None, **options: Any) -> Bridge:
    """The deployer's bridge in the restricted sandbox (no uid of its own, no network namespace: what
    every machine gives); ``options``: the bridge's own (``idle_seconds``, ``reap_interval``, ...)."""
    return Bridge(
        caps=sandbox.Capabilities("restricted", own_uid=False, netns=False),
        limits=sandbox.Limits(),
        run_dir=run_dir or Path(tempfile.mkdtemp(prefix="gateway-test-bridge-")),
        **options,
    )


def host(bridge: Bridge, slug: str, argv: list[str], root: Path, **options: Any) -> str:
    """``argv``, run in ``root`` with no environment, as ``slug``'s server on a started ``bridge``
    (``options``: the deployment's own, e.g. ``idle_seconds``); its endpoint."""
    bridge.register(
        Hosted(slug=slug, make_command=lambda env: Command(argv=argv, root=root, env={}), allowed_env=set(), **options)
    )
    return bridge.endpoint(slug)
