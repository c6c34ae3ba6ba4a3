"""The gateway calling a cloud function (Aliyun FC, Tencent SCF): the function's real entry
(``wemcp_bridge.py``, as the deployer's code zips ship it) with the configuration the cloud backends
give it (the key derived for its slug, the names of the variables calls may set, no values).

The gateway signs every request to it for that slug and sends each caller's keys with the call, so
the function holds no key of the server and answers nobody else."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2 as httpx
import pytest
import pytest_asyncio

from services.gateway.tests.gateway_testkit import USERS, bearer, mcp_client, set_quota, text_of
from wemcp.common.trust import environment_ring
from wemcp.deployer.artifacts import RUNTIME_DIR
from wemcp.deployer.backends.cloud import accepted_env, bridge_env
from wemcp.deployer.spec import parse_spec
from wemcp.devstack.testing import wait_for

pytestmark = pytest.mark.asyncio
# "keyed": the slug the test stack holds a system key for (API_KEY=system-key-0001)
SLUG = "keyed"
SPEC = {"packages": [{"registryType": "pypi", "identifier": "keyed-test", "version": "1.0.0",
                      "environmentVariables": [{"name": "API_KEY", "isSecret": True, "isRequired": True}]}]}
SERVER = textwrap.dedent('''
    import json
    import os
    from mcp.server.mcpserver import MCPServer

    app = MCPServer("keyed")

    @app.tool()
    def whoami() -> str:
        return json.dumps({"api_key": os.environ.get("API_KEY"),
                           "bridge": sorted(k for k in os.environ if k.startswith("WEMCP_"))})

    if __name__ == "__main__":
        app.run()
''')


@pytest_asyncio.fixture
async def function(tmp_path: Path) -> AsyncIterator[str]:
    """The function's entry around a stdio server, listening where the cloud's trigger forwards to."""
    (tmp_path / "server.py").write_text(SERVER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    configuration = bridge_env(environment_ring(), SLUG, accepted_env(parse_spec(SPEC)))
    assert configuration["WEMCP_BRIDGE_ENV"] == "API_KEY"
    env = {"PATH": os.environ["PATH"], **configuration, "WEMCP_BRIDGE_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, str(RUNTIME_DIR / "wemcp_bridge.py"), "--host", "127.0.0.1", "--",
                             sys.executable, str(tmp_path / "server.py")], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    async def up() -> bool:
        assert proc.poll() is None, "the function's entry exited"
        try:
            async with httpx.AsyncClient() as c:
                return (await c.get(f"{url}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(up, timeout=30)
    try:
        yield f"{url}/mcp"
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def whoami(result) -> dict:
    return json.loads(text_of(result))


async def test_the_gateway_signs_for_the_function_and_sends_each_callers_key(stack, function):
    await stack.deploy(SLUG, function, spec=SPEC, versions=["2025-06-18"])
    await set_quota(stack, None)
    stack.auth.vault[(str(USERS["bob"]), SLUG)] = {"API_KEY": "bob-vault-key"}
    # straight to the function (its URL is public): nothing without the platform's signature
    async with httpx.AsyncClient() as c:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}}
        r = await c.post(function, json=init, headers={"X-WeMcp-Env-API_KEY": "mine"})
        assert r.status_code == 401
    # through the gateway: a key sent with the call, the user's vault key, the platform's system key;
    # each reaches the server with that caller's calls only, and the server never sees the function's key
    callers = {"request": ({**bearer("alice"), "X-WeMcp-Env-API_KEY": "alice-per-request"}, "alice-per-request"),
               "vault": (bearer("bob"), "bob-vault-key"),
               "system": (bearer("alice"), "system-key-0001")}
    for source, (headers, expected) in callers.items():
        async with mcp_client(f"{stack.url}/mcp/{SLUG}", headers, mode="legacy") as c:
            for _ in range(2):
                seen = whoami(await c.call_tool("whoami", {}))
                assert seen["api_key"] == expected, source
                assert seen["bridge"] == [], f"{source}: the server can read {seen['bridge']}"
