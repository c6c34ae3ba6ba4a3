"""A hosted server stopped while idle (scale to zero, issue 15 part 5), seen through the gateway: the
bridge forgets the session opened on the stopped child (404); the gateway re-opens its upstream
session on the fresh child by itself, so the official client's session goes on."""

from __future__ import annotations

import sys

import pytest

from services.gateway.tests.gateway_testkit import bearer, mcp_client, text_of
from wemcp.testkit.hosted import BOOT, host, local_bridge


@pytest.mark.parametrize("versions", [["2025-11-25"], None], ids=["2025-session", "probed"])
async def test_a_hosted_server_stopped_while_idle_starts_again_under_the_same_client_session(stack, tmp_path,
                                                                                             versions):
    """``2025-session``: the gateway holds a 2025 session on the bridge, which the stop makes stale
    (404), and re-opens it; ``probed``: the gateway finds the bridge speaks 2026-07-28 and calls it
    statelessly, so a stop leaves nothing stale."""
    (tmp_path / "boot.py").write_text(BOOT)
    bridge = local_bridge(tmp_path / "run", idle_seconds=60.0, reap_interval=3600)
    await bridge.start()
    try:
        await stack.deploy("sleepy", host(bridge, "sleepy", [sys.executable, str(tmp_path / "boot.py")], tmp_path),
                           versions=versions)
        async with mcp_client(stack.url + "/mcp/sleepy", bearer("alice"), mode="legacy") as c:
            first = text_of(await c.call_tool("boot", {}))
            stale = set(bridge.sessions)
            assert bool(stale) == (versions is not None)  # the gateway's pooled upstream session
            for child in bridge.hosted["sleepy"].children.values():
                child.last_used -= 61  # idle for longer than the idle time
            assert await bridge.reap_once() == 1
            assert not bridge.sessions and not bridge.hosted["sleepy"].children

            second = text_of(await c.call_tool("boot", {}))  # same client session: no error
            assert second != first  # answered by a fresh child
            if versions is not None:  # on a new upstream session
                assert bridge.sessions and not (set(bridge.sessions) & stale)
    finally:
        await bridge.close()
