"""The bridge: one child per credential set (secrets never shared), scale to zero, legacy SSE, SSRF on remotes."""

from __future__ import annotations

import json
import textwrap
import uuid
from typing import Any

import httpx2 as httpx
import psutil
import pytest
from mcp import Client

from services.deployer.tests.deployer_testkit import bridge_client, bridge_headers, python_server
from wemcp.common.events.servers import ServerSubmitted
from wemcp.common.netpolicy import EgressPolicy
from wemcp.deployer.backends.base import DeployError, Target
from wemcp.deployer.backends.remote import RemoteDeployer
from wemcp.deployer.spec import SpecError, parse_spec
from wemcp.devstack.sources import stdio_server
from wemcp.devstack.testing import serve_app

WHO = textwrap.dedent('''
    import os
    import uuid
    from mcp.server.mcpserver import MCPServer

    BOOT = uuid.uuid4().hex  # one per process (pids repeat across bwrap's pid namespaces)

    app = MCPServer("who")

    @app.tool()
    def whoami() -> str:
        return f"{BOOT}:{os.environ.get('DEMO_TOKEN', '-')}"

    if __name__ == "__main__":
        app.run()
''')


async def _call(url: str, headers: dict[str, str]) -> str:
    async with httpx.AsyncClient(headers={**headers, **bridge_headers(url)}, timeout=30) as http:
        init = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
            headers={"accept": "application/json, text/event-stream"})
        assert init.status_code == 200, init.text
        sid = init.headers["mcp-session-id"]
        r = await http.post(url, json={"jsonrpc": "2.0", "id": "abc", "method": "tools/call",
                                       "params": {"name": "whoami", "arguments": {}}},
                            headers={"mcp-session-id": sid, "accept": "application/json, text/event-stream"})
        body = r.json()
        assert body["id"] == "abc"  # the client's id comes back although the child saw another
        return body["result"]["content"][0]["text"]


@pytest.mark.parametrize("deployer", [{"idle_seconds": 600.0}], indirect=True)
async def test_one_child_per_credential_set_and_scale_to_zero(deployer, tmp_path):
    h = deployer
    keys = [{"name": "DEMO_TOKEN", "isSecret": True}]
    d = await h.deploy("who", "Who", python_server(tmp_path / "archives", "who.py", WHO, environmentVariables=keys))
    hosted = h.orch.bridge.hosted["who"]

    alice = await _call(d["endpoint"], {"x-wemcp-env-demo-token": "alice-secret-1"})
    bob = await _call(d["endpoint"], {"x-wemcp-env-demo-token": "bob-secret-2"})
    alice2 = await _call(d["endpoint"], {"x-wemcp-env-demo-token": "alice-secret-1"})
    a_pid, a_tok = alice.split(":")
    b_pid, b_tok = bob.split(":")
    assert a_tok == "alice-secret-1" and b_tok == "bob-secret-2"
    assert a_pid != b_pid  # different processes (and uids): bob's child never saw alice's secret
    assert alice2.split(":")[0] == a_pid  # the same credential set reuses its warm child
    if h.orch.caps.own_uid:
        uids = {psutil.Process(c.proc.pid).uids().real for c in hosted.children.values()}
        assert len(uids) == len(hosted.children)

    # undeclared variables are refused
    async with httpx.AsyncClient() as http:
        r = await http.post(d["endpoint"], json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                            headers={"x-wemcp-env-path": "/evil", **bridge_headers(d["endpoint"])})
        assert r.status_code == 400

    # idle children are reaped (scale to zero); the next call starts a fresh one. Their last use is
    # moved back instead of waiting (a short idle time also reaped children between calls under load)
    running = len(hosted.children)  # alice's, bob's and the deploy's own (no credentials)
    assert running >= 2
    for child in hosted.children.values():
        child.last_used -= 601
    assert await h.orch.bridge.reap_once() == running
    assert await _no_children(h)
    again = await _call(d["endpoint"], {"x-wemcp-env-demo-token": "alice-secret-1"})
    assert again.split(":")[1] == "alice-secret-1" and again.split(":")[0] != a_pid


async def _no_children(h):
    return not h.orch.bridge.hosted["who"].children


async def test_legacy_sse_transport_and_crash_restart(deployer):
    h = deployer
    spec = {"packages": [{"registryType": "npm", "identifier": "@modelcontextprotocol/server-everything",
                          "version": "2026.8.31"}]}
    d = await h.deploy("ev-sse", "Ev", spec)
    sse_url = d["endpoint"].removesuffix("/mcp") + "/sse"
    from mcp.client.sse import sse_client

    async with Client(sse_client(sse_url, headers=bridge_headers(sse_url)), mode="legacy") as c:
        tools = await c.list_tools()
        assert any(t.name == "echo" for t in tools.tools)
    # kill the child behind the bridge's back: the next call starts a new one
    child = next(iter(h.orch.bridge.hosted["ev-sse"].children.values()))
    old = child.proc.pid
    child.proc.kill()
    await child.exited.wait()
    async with bridge_client(d["endpoint"], mode="legacy") as c:
        r = await c.call_tool("echo", {"message": "back"})
        assert "back" in r.content[0].text
    new = next(iter(h.orch.bridge.hosted["ev-sse"].children.values())).proc.pid
    assert new != old


async def _deploy_remote(url: str, allow: str = "") -> str:
    """The remote backend's deploy-time egress check (the connect-time one is the common library's
    and tests/security/test_egress.py's); the registered endpoint."""
    backend = RemoteDeployer(EgressPolicy(allow, registries=False))
    target = Target("r", uuid.uuid4(), parse_spec({"remotes": [{"type": "streamable-http", "url": url}]}))

    async def progress(name: str, detail: str | None = None) -> None:
        return None

    return (await backend.deploy(target, progress)).endpoint


@pytest.mark.parametrize("url", ["http://127.0.0.1:5432/mcp", "http://localhost/mcp", "http://169.254.169.254/",
                                 "http://10.0.0.8/mcp", "http://[::1]/mcp", "http://100.100.100.200/mcp",
                                 "file:///etc/passwd", "http://user:pw@example.com/"])
async def test_remote_check_refuses_private_targets(url):
    with pytest.raises((DeployError, SpecError)):
        await _deploy_remote(url)


async def test_remote_check_allow_list_permits_named_networks():
    assert await _deploy_remote("http://127.0.0.1:9/mcp", "127.0.0.0/8") == "http://127.0.0.1:9/mcp"


def _credentialed_front(endpoint: str) -> Any:
    """A plain HTTP front of a bridge endpoint adding the gateway's credential (bridge replies are
    whole JSON bodies, so buffering is enough)."""
    from starlette.requests import Request
    from starlette.responses import Response

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        req = Request(scope, receive)
        headers = {k: v for k, v in req.headers.items() if k not in ("host", "content-length")}
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.request(req.method, endpoint, content=await req.body(),
                                   headers={**headers, **bridge_headers(endpoint)})
        kept = {k: v for k, v in r.headers.items() if k in ("content-type", "mcp-session-id")}
        await Response(r.content, r.status_code, headers=kept)(scope, receive, send)

    return app


async def test_remote_server_is_registered_after_check_and_introspected(settings_for, infra, tmp_path, clean_db,
                                                                         clean_bus):
    """A real Streamable HTTP server on loopback (allowed by the allow-list setting) is registered, not hosted."""
    from services.deployer.tests.deployer_testkit import Harness, deployer_settings
    from wemcp.common.service import running
    from wemcp.deployer.main import SPEC

    # the bridge of one deployer serves as "a remote" for another deployer
    (tmp_path / "archives").mkdir()
    async with running(SPEC, deployer_settings(settings_for, tmp_path, egress_allow="127.0.0.0/8")) as app:
        h = Harness(app, infra)
        spec = {"packages": [{"registryType": "npm", "identifier": "@modelcontextprotocol/server-everything",
                              "version": "2026.8.31"}]}
        await h.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="hosted", name="H", spec=spec))
        hosted = await h.until_status("hosted", "deployed", "failed")
        # the bridge answers only the platform: a front that adds the gateway's credential is the remote
        async with serve_app(_credentialed_front(hosted["endpoint"])) as front:
            remote_url = f"{front}/mcp"
            await h.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="remote", name="R",
                                            spec={"remotes": [{"type": "streamable-http", "url": remote_url}]}))
            d = await h.until_status("remote", "deployed", "failed")
        assert d["status"] == "deployed", d["reason"]
        assert d["backend"] == "remote" and d["endpoint"] == remote_url
        assert {t["name"] for t in d["tools"]} == {t["name"] for t in hosted["tools"]}
        assert d["protocol_versions"] == ["2026-07-28"]
        await h.client.aclose()
    async with running(SPEC, deployer_settings(settings_for, tmp_path)) as app:
        h = Harness(app, infra)
        await h.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="remote2", name="R",
                                        spec={"remotes": [{"url": "http://127.0.0.1:1/mcp"}]}))
        d = await h.until_status("remote2", "failed")
        assert "not a public address" in d["reason"]
        assert json.dumps(d).count("127.0.0.1:1") >= 1
        await h.client.aclose()


def test_sandbox_uids_are_leased_machine_wide(tmp_path):
    """Two deployers (two pools over one lock directory) never hold the same uid; a released uid is
    free again for the other."""
    from wemcp.deployer.bridge import UidPool

    a = UidPool(300000, 3, lock_dir=tmp_path)
    b = UidPool(300000, 3, lock_dir=tmp_path)
    held_a = {a.acquire(), a.acquire()}
    held_b = {b.acquire()}
    assert held_a.isdisjoint(held_b) and len(held_a | held_b) == 3
    with pytest.raises(RuntimeError):
        b.acquire()
    a.release(min(held_a))
    assert b.acquire() == min(held_a)


ECHO = stdio_server("echo")


async def test_modern_requests_reach_a_handshake_era_child_and_keepalive_calls_do_not_stall(tmp_path):
    """A 2026-07-28 request is answered by an SDK 2.x stdio child (which refuses the 2026 envelope
    on a handshake-era connection: the bridge strips it), and calls on one keep-alive connection
    take milliseconds (TCP_NODELAY on accepted sockets; without it each reply waited ~40 ms for
    the client's delayed ACK)."""
    import socket
    import sys
    from pathlib import Path

    from wemcp.deployer import sandbox
    from wemcp.deployer.bridge import Bridge, Hosted
    from wemcp.deployer.child import Command

    (tmp_path / "echo.py").write_text(ECHO)
    bridge = Bridge(caps=sandbox.Capabilities("restricted", own_uid=False, netns=False), limits=sandbox.Limits(),
                    run_dir=tmp_path / "run")
    bridge.register(Hosted(slug="echo", make_command=lambda env: Command(
        argv=[sys.executable, str(tmp_path / "echo.py")], root=Path(tmp_path), env={}),
        allowed_env=set()))
    await bridge.start()
    try:
        url = bridge.endpoint("echo")
        headers = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "echo",
                   "accept": "application/json, text/event-stream"}

        def body(i: int) -> dict:
            return {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
                "name": "echo", "arguments": {"text": f"hi-{i}"},
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                          "io.modelcontextprotocol/clientCapabilities": {},
                          "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}}}}

        async with httpx.AsyncClient(timeout=30, headers=bridge_headers(url)) as http:
            first = (await http.post(url, json=body(0), headers=headers)).json()
            assert first["result"]["content"][0]["text"] == "hi-0", first
            assert first["result"]["resultType"] == "complete"
            for i in range(1, 21):
                r = (await http.post(url, json=body(i), headers=headers)).json()
                assert r["id"] == i and r["result"]["content"][0]["text"] == f"hi-{i}", r
            # the accepted keep-alive connection has TCP_NODELAY (what keeps replies from waiting
            # for the client's delayed ACK; the timing itself is measured in bench/, not here)
            conns = list(bridge._server.server_state.connections)
            assert conns, "no open connection on the bridge"
            for proto in conns:
                sock = proto.transport.get_extra_info("socket")
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), "TCP_NODELAY is off"
    finally:
        await bridge.close()


async def test_bridge_leaves_the_host_process_signal_handlers_alone(tmp_path):
    """The bridge's embedded uvicorn must not take SIGINT/SIGTERM from the deployer it runs in
    (uvicorn installs its own in ``capture_signals`` when serving in the main thread)."""
    import signal
    import threading

    from wemcp.deployer import sandbox
    from wemcp.deployer.bridge import Bridge

    assert threading.current_thread() is threading.main_thread()  # where uvicorn would install them
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    bridge = Bridge(caps=sandbox.Capabilities("restricted", own_uid=False, netns=False), limits=sandbox.Limits(),
                    run_dir=tmp_path / "run")
    await bridge.start()
    try:
        assert {sig: signal.getsignal(sig) for sig in before} == before
    finally:
        await bridge.close()


def test_a_server_message_goes_only_to_a_call_it_can_belong_to(tmp_path):
    """What a child says on its own reaches a caller only when the call it belongs to is certain: by
    progress token, or the one call in flight, or the latest call of the only session in flight —
    never a guess between two sessions (on a shared child that could be two users)."""
    import asyncio

    from wemcp.deployer import sandbox
    from wemcp.deployer.child import Call, Command, StdioChild

    child = StdioChild(Command(argv=["true"], root=tmp_path, env={}),
                       caps=sandbox.Capabilities("restricted", own_uid=False, netns=False),
                       limits=sandbox.Limits(), uid=None, run_dir=tmp_path / "run")
    ask = {"jsonrpc": "2.0", "id": 0, "method": "sampling/createMessage", "params": {}}
    log = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}}
    assert child.owner_of(ask) is None  # nothing in flight
    alice1 = Call(asyncio.Queue(), "alice", progress_token="t")
    child.calls[1] = alice1
    assert child.owner_of(ask) is alice1 and child.owner_of(log) is alice1
    alice2 = Call(asyncio.Queue(), "alice")
    child.calls[2] = alice2
    assert child.owner_of(ask) is alice2  # one session in flight: its latest call
    bob = Call(asyncio.Queue(), "bob")
    child.calls[3] = bob
    assert child.owner_of(ask) is None and child.owner_of(log) is None  # two sessions: nobody's
    progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}}
    assert child.owner_of(progress) is alice1  # a progress token names its call whatever else is in flight
    assert child.owner_of({**progress, "params": {"progressToken": "1"}}) is None
