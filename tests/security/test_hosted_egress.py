"""Issue 15, part 2: a hosted server that asked for network reaches the internet through the platform's
egress proxy only. The deployer service runs in-process on the real infrastructure and deploys, through
its real worker and local backend (bubblewrap sandbox), a source archive whose server uses ``httpx``
and ``requests`` (installed from PyPI as any submitter's requirements are). Its tool then tries what
hostile or careless code would: the allowed stand-in for a public API (a loopback port, opened for
the proxy only by a ``host:port`` pinhole in ``egress_proxy_allow``), and the platform's own
addresses — the gateway, the deployer's bridge, Postgres, Redis, NATS, the cloud metadata address, a
private network — directly and through the proxy. The server's page (``/egress``) lists the allowed
host it used.
"""

from __future__ import annotations

import hashlib
import json
import socket
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from services.deployer.tests.deployer_testkit import bridge_headers, running_deployer
from wemcp.common.events.servers import ServerSubmitted
from wemcp.devstack.infra import free_port
from wemcp.devstack.testing import serve_app, tar_gz

REPO = Path(__file__).resolve().parents[2]

CLIENT = (REPO / "services" / "deployer" / "tests" / "egress" / "client_server.py").read_text()
OWNER = {"id": str(uuid.uuid4()), "role": "user", "login": "net-owner"}


@pytest.fixture
def api_port() -> int:
    """The stand-in for a public API: a free loopback port the proxy's pinhole names."""
    return free_port()


def _app(text: str) -> Starlette:
    return Starlette(routes=[Route("/{path:path}", lambda r: PlainTextResponse(f"{text} {r.headers.get('host')}"))])


async def call(endpoint: str, **args: Any) -> str:
    import httpx2 as httpx

    headers = {**bridge_headers(endpoint), "accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as c:
        init = await c.post(endpoint, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        sid = init.headers["mcp-session-id"]
        r = await c.post(endpoint, headers={"mcp-session-id": sid}, json={
            "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "net", "arguments": args}})
    return str(r.json()["result"]["content"][0]["text"])


async def test_hosted_server_reaches_the_allowed_api_and_nothing_of_the_platform(settings_for, infra, tmp_path,
                                                                               clean_db, clean_bus, api_port):
    from wemcp.testkit.auth import as_user

    # the gateway: a stand-in on the loopback, where `make run` puts it
    async with serve_app(_app("public api"), api_port) as api_url, serve_app(_app("gateway")) as gateway_url, \
            running_deployer(settings_for, infra, tmp_path,
                             egress_proxy_allow=f"127.0.0.1:{api_port}") as h:
        data = tar_gz({"server.py": CLIENT})
        digest = hashlib.sha256(data).hexdigest()
        (tmp_path / "archives" / f"{digest}.tar.gz").write_bytes(data)
        spec = {"network": True, "archive": {"sha256": digest, "manifest": {
            "command": "python", "args": ["server.py"], "requirements": ["httpx==0.28.1", "requests==2.32.3"]}}}
        await h.publish(ServerSubmitted(server_id=uuid.uuid4(), slug="netted", name="Netted", spec=spec,
                                        owner_id=uuid.UUID(OWNER["id"])))
        d = await h.until_status("netted", "deployed", "failed")
        assert d["status"] == "deployed", (d["reason"], d["logs"])
        assert any("egress proxy" in (s["detail"] or "") for s in d["steps"]), d["steps"]
        endpoint = d["endpoint"]

        env = json.loads(await call(endpoint, kind="env"))
        assert env["HTTPS_PROXY"].startswith("http://127.0.0.1:"), env
        for lib in ("httpx", "requests"):
            got = await call(endpoint, kind="get", lib=lib, url=f"{api_url}/v1/forecast?city=x")
            assert got == f"200 public api 127.0.0.1:{api_port}", (lib, got)

        bridge = urlsplit(endpoint).port
        gateway = urlsplit(gateway_url).port
        internals = {"gateway": gateway, "bridge": bridge, "postgres": urlsplit(infra.database_url).port,
                     "redis": urlsplit(infra.redis_url).port, "nats": urlsplit(infra.nats_url).port}
        for name, port in internals.items():
            with socket.create_connection(("127.0.0.1", port), timeout=3):
                pass  # control: it listens, for anyone outside the sandbox
            got = await call(endpoint, kind="connect", host="127.0.0.1", port=port)
            assert got.startswith("DENIED"), (name, got)
            for lib in ("httpx", "requests"):
                for scheme in ("http", "https"):  # plain forward, CONNECT
                    got = await call(endpoint, kind="get", lib=lib, url=f"{scheme}://127.0.0.1:{port}/")
                    refused = got.startswith("403 ") or ("403" in got and "ProxyError" in got)
                    assert refused, (name, lib, scheme, got)
        for url in ("http://169.254.169.254/latest/meta-data/", "http://172.17.0.1:8000/", "http://localhost:"
                    f"{gateway}/"):
            got = await call(endpoint, kind="get", lib="httpx", url=url)
            assert got.startswith("403 "), (url, got)
            got = await call(endpoint, kind="connect", host=urlsplit(url).hostname, port=urlsplit(url).port or 80)
            assert got.startswith("DENIED"), (url, got)

        # the server's page: the hosts it reached (and was refused), for its owner
        r = await h.client.get("/api/v1/deployments/netted/egress",
                               headers=as_user(OWNER, service="deployer"))
        assert r.status_code == 200, r.text
        hosts = {x["host"]: x for x in r.json()["hosts"]}
        assert hosts[f"127.0.0.1:{api_port}"]["connections"] == 2 and hosts[f"127.0.0.1:{api_port}"]["refused"] == 0
        assert hosts["169.254.169.254:80"]["refused"] == 1 and hosts["169.254.169.254:80"]["connections"] == 0
        assert hosts[f"127.0.0.1:{internals['postgres']}"]["refused"] == 4
        assert "forecast" not in r.text and "city" not in r.text
