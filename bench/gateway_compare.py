"""Benchmark (issue 5): the gateway's overhead on one MCP ``tools/call``, against calling the hosted
server directly, side by side with supergateway (npm) and mcp-proxy (PyPI) on the same stdio server.

    .venv/bin/python bench/gateway_compare.py [--seconds 3] [--concurrency 1,16,64] [--rounds 1]
                                              [--rows direct,gateway,...] [--profile-gateway FILE]
                                              [--baseline-tree DIR]

**The upstream** is one stdio MCP server: ``echo`` (this file, ``--role echo``), written with the
official ``mcp`` Python SDK 2.x (``MCPServer``, one tool ``echo(text) -> text``), run by the
workspace's Python. Every proxy wraps that same command, and each runs one child of it:

- ``direct``: the deployer's bridge (``wemcp.deployer.bridge.Bridge``, stdio -> Streamable HTTP, the
  way hosted servers run on this platform), in its own process (``--role bridge``, sandbox probed as
  the deployer does), called at ``/s/echo/mcp`` with 2026-07-28 stateless requests.
- ``gateway``: client -> the gateway (``python -m wemcp.gateway.main``, its own process, production
  settings: log level info with its access log, quota on, call events to JetStream) -> the bridge.
  The route comes from ``server.submitted`` + ``server.deployed`` events on NATS, as deployed
  servers do. Rows: anonymous, 2026-07-28 (no session); ``gateway-jwt``: a signed-in user (an
  EdDSA JWT verified against a JWKS served by a stand-in for auth; warm, so no call to auth per
  request) whose every call also takes the quota decision in Redis (limit raised so the bench is
  never refused); ``gateway-2025``: anonymous, a 2025-11-25 client session (initialize +
  Mcp-Session-Id) that the gateway translates to stateless requests to the bridge.
- ``supergateway`` (npm, pinned in bench/package.json, installed by ``npm ci`` into
  bench/node_modules): ``--outputTransport streamableHttp --stateful --logLevel none``. Its
  stateless mode spawns a new child process per POST (in both protocol eras), so the stateful mode
  is the one that keeps a warm child: one session = one child, as the bridge keeps one child per
  credential set. The client opens one 2025-11-25 session and all workers send on it.
- ``mcp-proxy`` (PyPI, pinned in bench/mcp-proxy.txt, installed with the pinned uv into
  .data/bench/mcp-proxy; it needs ``mcp`` 1.x, which the workspace cannot hold): server mode
  ``--port N -- <echo command>``, one stdio child shared by all sessions, JSON responses. Default
  (stateful) mode with one 2025-11-25 session; mcp 1.x does not speak 2026-07-28.

Why this is fair: every row has exactly one warm stdio child of the same server; every proxy runs
in the mode that keeps it warm, with its logging at its quietest documented setting except the
gateway, which runs as in production (info level, access log, call events, quota for signed-in
users). The gateway row is a two-hop path (gateway -> bridge -> child), the others one hop.

**The client** is its own process (``--role client``): uvloop, one keep-alive HTTP/1.1 connection
per worker, requests written by hand and responses parsed by httptools (so the client's own CPU
cost is small and equal for every row). Each cell: ``concurrency`` workers send ``tools/call
echo`` back to back for ``--warmup`` seconds (not counted), then for ``--seconds``; latency is
measured around each call (perf_counter), throughput = calls / wall time. Every reply is checked
(HTTP 200, the echoed text, no JSON-RPC error). Rows are interleaved per concurrency level and
per round (``--rounds``, the median of rounds is reported) so slow drifts of machine load hit
every row alike. ``uptime`` is printed before and after.

**A baseline in the same run** (``--baseline-tree DIR``: a checkout of an earlier commit with its own
``make install``, e.g. ``git worktree add --detach ../wt-base <commit>``): adds the rows
``base-direct`` (that tree's bridge) and ``base-gateway`` (that tree's gateway in front of its own
bridge, anonymous, 2026-07-28), each in its own process run by that tree's venv, interleaved with
the others, and prints the p50 difference ``gateway - base-gateway`` per concurrency next to the
round-to-round spread of both rows — how a change's cost is judged on a machine whose load drifts.

Everything is on loopback; NATS and Redis are the embedded ones (``wemcp.devstack.infra``), no
Docker. bench/results/gateway.md holds a recorded run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from benchkit import pct, record

from wemcp.common.trust import BridgeHeaders

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
TEXT = "bench-echo-7f3a"
MODERN = "2026-07-28"
LEGACY = "2025-11-25"
ALL_ROWS = ("direct", "gateway", "gateway-jwt", "gateway-2025", "supergateway", "mcp-proxy")
SELF = str(Path(__file__).resolve())
ECHO_CMD = [PY, SELF, "--role", "echo"]


# -- the stdio server --------------------------------------------------------------------------------------
def run_echo() -> None:
    from mcp.server.mcpserver import MCPServer

    app = MCPServer("bench-echo")

    @app.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    app.run()  # stdio


# -- the deployer's bridge, in its own process ---------------------------------------------------------------
async def run_bridge(port_file: Path, slug: str = "echo") -> None:
    from wemcp.common.logging import configure_logging
    from wemcp.deployer import sandbox
    from wemcp.deployer.bridge import Bridge, Hosted
    from wemcp.deployer.child import Command

    configure_logging("deployer", "info", "json")
    run_dir = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    os.chmod(run_dir, 0o711)
    # The restricted sandbox (rlimits, cleared environment, own session), under this process's uid:
    # as root the deployer would also give the child a uid of its own, which cannot run the
    # workspace's interpreter under /root. Only how the child starts differs, not the per-call path.
    caps = sandbox.Capabilities("restricted", own_uid=False, netns=False)
    bridge = Bridge(caps=caps, limits=sandbox.Limits(), run_dir=run_dir)
    bridge.register(Hosted(slug=slug, make_command=lambda env: Command(argv=ECHO_CMD, root=BENCH, env={}),
                           allowed_env=set()))
    await bridge.start()
    from wemcp.common.service import freeze_startup_objects

    freeze_startup_objects()  # as run_service does in the deployer process
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port_file.write_text(f"{bridge.port} {caps.mode}")  # noqa: ASYNC240 (once, at start)
    await stop.wait()
    await bridge.close()
    shutil.rmtree(run_dir, ignore_errors=True)


# -- the load client, in its own process ----------------------------------------------------------------------
class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: write a request, await the parsed response."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport: Any = None
        self.waiter: asyncio.Future[tuple[int, dict[bytes, bytes], bytes]] | None = None
        self.body: list[bytes] = []
        self.headers: dict[bytes, bytes] = {}

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.body, self.headers = [], {}

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), self.headers, b"".join(self.body)))

    async def request(self, data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


def http_request(host: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"host: {host}", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def run_client(urls: list[str], mode: str, extra: dict[str, str], concurrency: int, seconds: float,
                     warmup: float, between: Callable[[], Awaitable[None]] | None = None) -> dict[str, Any]:
    """``concurrency`` workers, worker ``i`` with one keep-alive connection to ``urls[i % len(urls)]``
    (what an L4 balancer does with connections), sending ``tools/call echo`` back to back, every reply
    checked; on 2025 rows all share one session, initialized on ``urls[0]``. The warm-up, then
    ``between()`` (scale.py's parent samples CPU there), then the measured ``seconds``."""
    from urllib.parse import urlsplit

    parts = [urlsplit(u) for u in urls]
    loop = asyncio.get_running_loop()
    base = {"content-type": "application/json", "accept": "application/json, text/event-stream", **extra}

    async def connect(i: int) -> Conn:
        _, proto = await loop.create_connection(Conn, parts[i].hostname or "127.0.0.1", parts[i].port or 80)
        return proto

    def req(i: int, headers: dict[str, str], body: bytes) -> bytes:
        return http_request(f"{parts[i].hostname or '127.0.0.1'}:{parts[i].port or 80}", parts[i].path, headers, body)

    if mode == "2025":
        c = await connect(0)
        init = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}).encode()
        status, headers, body = await c.request(req(0, base, init))
        assert status == 200 and b"result" in body, (status, body[:300])
        sid = headers[b"mcp-session-id"].decode()
        base = {**base, "mcp-protocol-version": LEGACY, "mcp-session-id": sid}
        note = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
        status, _, body = await c.request(req(0, base, note))
        assert status in (200, 202), (status, body[:300])
        c.transport.close()
        meta: dict[str, Any] = {}
    else:
        base = {**base, "mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "echo"}
        meta = {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                          "io.modelcontextprotocol/clientCapabilities": {}}}

    lat: list[float] = []
    errors: list[str] = []
    state = {"measuring": False, "stop_at": 0.0, "calls": 0, "all": 0}
    conns = [await connect(i % len(urls)) for i in range(concurrency)]

    async def worker(i: int) -> None:
        c, g = conns[i], i % len(urls)
        n = i * 1_000_000_000  # ids unique within the session: workers share one on 2025 rows
        while True:
            t = time.perf_counter()
            if t >= state["stop_at"]:
                return
            n += 1
            body = json.dumps({"jsonrpc": "2.0", "id": n, "method": "tools/call",
                               "params": {"name": "echo", "arguments": {"text": TEXT}, **meta}}).encode()
            status, _, reply = await c.request(req(g, base, body))
            dt = time.perf_counter() - t
            if status != 200 or TEXT.encode() not in reply or b'"error"' in reply:
                if len(errors) < 5:
                    errors.append(f"{status} {reply[:300]!r}")
                continue
            state["all"] += 1
            if state["measuring"]:
                lat.append(dt)
                state["calls"] += 1

    cpu0 = time.process_time()
    state["stop_at"] = time.perf_counter() + warmup
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    if errors:
        return {"errors": errors}
    if between is not None:
        await between()
    state["measuring"] = True
    t0 = time.perf_counter()
    state["stop_at"] = t0 + seconds
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    wall = time.perf_counter() - t0
    for c in conns:
        c.transport.close()
    if errors or not lat:
        return {"errors": errors or ["no call completed"], "n": 0}
    return {"p50": pct(lat, 50) * 1000, "p99": pct(lat, 99) * 1000, "rps": state["calls"] / wall, "n": state["calls"],
            "all": state["all"], "client_cpu": time.process_time() - cpu0, "wall": wall, "errors": errors}


# -- orchestration --------------------------------------------------------------------------------------------
def free_port() -> int:
    from wemcp.devstack.infra import free_port as fp

    return fp()


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60.0) -> None:
    from wemcp.devstack.infra import wait_port as wp

    wp(port, timeout, proc, what)


def ensure_supergateway() -> Path:
    """bench/node_modules from bench/package-lock.json (npm ci), once."""
    binary = BENCH / "node_modules" / ".bin" / "supergateway"
    if not binary.exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=BENCH, check=True)
    return binary


def ensure_mcp_proxy() -> Path:
    """A venv of its own under .data/bench (mcp-proxy needs mcp 1.x), from bench/mcp-proxy.txt."""
    venv = ROOT / ".data" / "bench" / "mcp-proxy"
    binary = venv / "bin" / "mcp-proxy"
    reqs = BENCH / "mcp-proxy.txt"
    stamp = venv / ".requirements"
    if binary.exists() and stamp.exists() and stamp.read_text() == reqs.read_text():
        return binary
    uv = ROOT / ".tools" / "bin" / "uv"
    if not uv.exists():
        subprocess.run(["make", "-C", str(ROOT), "install"], check=True)
    subprocess.run([str(uv), "venv", "-q", "--allow-existing", "--python", PY, str(venv)], check=True)
    subprocess.run([str(uv), "pip", "sync", "-q", "--python", str(venv / "bin" / "python"), str(reqs)], check=True)
    stamp.write_text(reqs.read_text())
    return binary


class Jwks:
    """auth's ``GET /internal/auth/jwks`` and a token it would have issued (EdDSA, kid, iss/aud)."""

    def __init__(self) -> None:
        import jwt
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self.kid = f"bench-{uuid.uuid4().hex[:8]}"
        key = Ed25519PrivateKey.generate()
        raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.jwks = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": jwt.utils.base64url_encode(raw).decode(),
                               "kid": self.kid, "alg": "EdDSA", "use": "sig"}]}
        now = int(time.time())
        self.user_id = uuid.uuid4()
        self.token = jwt.encode({"iss": "wemcp", "aud": "wemcp", "sub": str(self.user_id), "role": "user",
                                 "login": "bench", "sid": str(uuid.uuid4()), "iat": now, "nbf": now,
                                 "exp": now + 3600, "jti": uuid.uuid4().hex},
                                key, algorithm="EdDSA", headers={"kid": self.kid, "typ": "at+jwt"})

    @contextlib.asynccontextmanager
    async def serve(self) -> Any:
        from aiohttp import web

        async def jwks(_: Any) -> Any:
            return web.json_response(self.jwks)

        app = web.Application()
        app.router.add_get("/internal/auth/jwks", jwks)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()


async def publish_route(nats_url: str, slug: str, endpoint: str) -> None:
    """The route to a server behind the bridge (no declared inputs), both protocol eras."""
    from wemcp.testkit.catalog import publish_route as publish

    await publish(nats_url, slug, endpoint, name=f"io.bench/{slug}", protocol_versions=[LEGACY, MODERN])


def client_cmd(url: str, mode: str, headers: Mapping[str, str], c: int, seconds: float, warmup: float) -> list[str]:
    return [PY, SELF, "--role", "client", "--url", url, "--mode", mode,
            "--headers", json.dumps(dict(headers)), "--concurrency", str(c), "--seconds", str(seconds),
            "--warmup", str(warmup)]


async def wait_ready(url: str, mode: str, headers: Mapping[str, str], within: float = 60.0) -> None:
    """Until one call through ``url`` succeeds (the gateway has its route, children have started)."""
    end = time.monotonic() + within
    last = ""
    while time.monotonic() < end:
        proc = await asyncio.create_subprocess_exec(*client_cmd(url, mode, headers, 1, 0.05, 0.0),
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode == 0:
            r = json.loads(out)
            if not r.get("errors") and r.get("n"):
                return
            last = str(r.get("errors"))
        else:
            last = err.decode()[-500:]
        await asyncio.sleep(0.3)
    raise RuntimeError(f"{url} never answered a call: {last}")


def cpu_seconds(pids: list[int], descendants: bool = False) -> float:
    """User + system CPU of these processes, or of their (live) descendants."""
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for p in (root.children(recursive=True) if descendants else [root]):
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
    return total


def cpu_groups(row: str, pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of the processes a row's calls go through, by role."""
    if row == "base-gateway":
        return {"proxy": cpu_seconds([pids["base-gateway"]]), "bridge": cpu_seconds([pids["base-bridge"]]),
                "child": cpu_seconds([pids["base-bridge"]], True),
                "nats+redis": cpu_seconds([pids["nats"], pids["redis"]])}
    if row == "base-direct":
        return {"proxy": cpu_seconds([pids["base-bridge"]]), "child": cpu_seconds([pids["base-bridge"]], True)}
    if row.startswith("gateway"):
        return {"proxy": cpu_seconds([pids["gateway"]]), "bridge": cpu_seconds([pids["bridge"]]),
                "child": cpu_seconds([pids["bridge"]], True), "nats+redis": cpu_seconds([pids["nats"], pids["redis"]])}
    proxy = pids["bridge"] if row == "direct" else pids[row]
    return {"proxy": cpu_seconds([proxy]), "child": cpu_seconds([proxy], True)}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


async def main(a: argparse.Namespace) -> None:
    from wemcp.devstack.infra import EmbeddedNats, EmbeddedRedis

    rows = [r for r in a.rows.split(",") if r]
    base_tree: Path | None = a.baseline_tree
    if base_tree is not None:
        if not (base_tree / ".venv" / "bin" / "python").exists():
            raise SystemExit(f"--baseline-tree {base_tree}: no .venv there (run make install in it)")
        rows += [r for r in ("base-direct", "base-gateway") if r not in rows]
    levels = [int(x) for x in a.concurrency.split(",")]
    sg_bin = ensure_supergateway() if "supergateway" in rows else None
    mp_bin = ensure_mcp_proxy() if "mcp-proxy" in rows else None
    tmp = Path(tempfile.mkdtemp(prefix="gwcompare-"))
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(args: list[str], name: str, env: dict[str, str] | None = None,
              cwd: Path = BENCH) -> subprocess.Popen[bytes]:
        log = open(tmp / f"{name}.log", "ab")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env, cwd=str(cwd), start_new_session=True)
        log.close()
        procs.append(p)
        return p

    nats_srv = EmbeddedNats(tmp / "nats")
    redis_srv = EmbeddedRedis(tmp / "redis", persistent=False)
    nats_srv.start()
    redis_srv.start()
    jwks = Jwks()
    targets: dict[str, tuple[str, str, dict[str, str]]] = {}
    pids: dict[str, int] = {}
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        async with jwks.serve() as auth_url:
            # the bridge (the hosted server "directly")
            async def start_bridge(py: str, script: str, name: str, cwd: Path,
                                   slug: str = "echo") -> tuple[subprocess.Popen[bytes], str, str]:
                port_file = tmp / f"{name}.port"
                proc = spawn([py, script, "--role", "bridge", "--port-file", str(port_file), "--slug", slug], name,
                             cwd=cwd)
                for _ in range(2400):  # 2 minutes: a loaded machine starts Python slowly
                    if port_file.exists() and port_file.read_text():
                        break
                    if proc.poll() is not None:
                        raise RuntimeError(f"the bridge exited; see {tmp / f'{name}.log'}")
                    await asyncio.sleep(0.05)
                port, mode = port_file.read_text().split()
                return proc, port, mode

            bridge, bport, sandbox_mode = await start_bridge(PY, SELF, "bridge", BENCH)
            pids.update(bridge=bridge.pid, nats=nats_srv.proc.pid, redis=redis_srv.proc.pid)
            bridge_url = f"http://127.0.0.1:{bport}/s/echo/mcp"
            # the bridge answers only the platform: the gateway's credential for that slug, signed per round
            targets["direct"] = (bridge_url, "2026", BridgeHeaders("echo"))
            # the gateway, started as production starts it
            if any(r.startswith("gateway") for r in rows):
                gport = free_port()
                env = {**os.environ, "NATS_URL": nats_srv.url, "REDIS_URL": redis_srv.url,
                       "DATABASE_URL": "postgresql://bench@127.0.0.1:1/unused", "LOG_LEVEL": "info",
                       "LOG_FORMAT": "json", "WEMCP_GATEWAY_HOST": "127.0.0.1", "WEMCP_GATEWAY_PORT": str(gport),
                       "WEMCP_GATEWAY_AUTH_URL": auth_url, "WEMCP_GATEWAY_QUOTA_ENABLED": "true",
                       "WEMCP_GATEWAY_SYSTEM_KEYS_FROM_VAULT": "false",
                       "WEMCP_RATELIMIT_SERVER_DAILY_DEFAULT": str(10**9)}
                env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
                env.update(kv.split("=", 1) for kv in a.gateway_env if "=" in kv)
                args = [PY, "-m", "wemcp.gateway.main"]
                if a.profile_gateway:
                    args = [PY, "-m", "cProfile", "-o", a.profile_gateway, "-m", "wemcp.gateway.main"]
                gw = spawn(args, "gateway", env)
                pids["gateway"] = gw.pid
                wait_port(gport, gw, "gateway")
                await publish_route(nats_srv.url, "echo", bridge_url)
                if base_tree is not None:  # the same, from the baseline tree, in front of its own bridge
                    base_py = str(base_tree / ".venv" / "bin" / "python")
                    # this script's bridge role run by that tree's venv (so that tree's deployer bridge),
                    # hosting the slug the base gateway routes: the bridge credential is per slug
                    bb, bbport, _ = await start_bridge(base_py, SELF, "base-bridge", BENCH, slug="echo-base")
                    base_bridge_url = f"http://127.0.0.1:{bbport}/s/echo-base/mcp"
                    bgport = free_port()
                    benv = {**env, "WEMCP_GATEWAY_PORT": str(bgport)}
                    bgw = spawn([base_py, "-m", "wemcp.gateway.main"], "base-gateway", benv, cwd=base_tree / "bench")
                    pids.update({"base-bridge": bb.pid, "base-gateway": bgw.pid})
                    wait_port(bgport, bgw, "base-gateway")
                    await publish_route(nats_srv.url, "echo-base", base_bridge_url)
                    targets["base-direct"] = (base_bridge_url, "2026", {})
                    targets["base-gateway"] = (f"http://127.0.0.1:{bgport}/mcp/echo-base", "2026", {})
                gw_url = f"http://127.0.0.1:{gport}/mcp/echo"
                targets["gateway"] = (gw_url, "2026", {})
                targets["gateway-jwt"] = (gw_url, "2026", {"authorization": f"Bearer {jwks.token}"})
                targets["gateway-2025"] = (gw_url, "2025", {})
            if sg_bin is not None:
                sport = free_port()
                sg = spawn([str(sg_bin), "--stdio", " ".join(ECHO_CMD), "--outputTransport", "streamableHttp",
                            "--stateful", "--port", str(sport), "--logLevel", "none"], "supergateway")
                wait_port(sport, sg, "supergateway")
                pids["supergateway"] = sg.pid
                targets["supergateway"] = (f"http://127.0.0.1:{sport}/mcp", "2025", {})
            if mp_bin is not None:
                mport = free_port()
                mp = spawn([str(mp_bin), "--host", "127.0.0.1", "--port", str(mport), "--log-level", "WARNING",
                            "--", *ECHO_CMD], "mcp-proxy")
                wait_port(mport, mp, "mcp-proxy")
                pids["mcp-proxy"] = mp.pid
                targets["mcp-proxy"] = (f"http://127.0.0.1:{mport}/mcp", "2025", {})
            # the bridges answer only the platform's credential (wemcp.common.trust): the direct rows
            # carry a bridge assertion, signed afresh for each cell (an assertion lives 120 s)
            from wemcp.common.trust import HEADER_ASSERTION, Issuer, environment_ring

            issuer = Issuer(environment_ring(), "gateway")

            def with_credential(r: str) -> tuple[str, str, Mapping[str, str]]:
                url, mode, headers = targets[r]
                if r in ("direct", "base-direct"):
                    slug = "echo" if r == "direct" else "echo-base"
                    headers = {**headers, HEADER_ASSERTION: issuer.bridge_token(slug)}
                return url, mode, headers

            for r in rows:
                url, mode, headers = with_credential(r)
                await wait_ready(url, mode, headers)
            before = uptime()
            for rnd in range(a.rounds):
                for c in levels:
                    for r in rows:
                        url, mode, headers = with_credential(r)
                        cpu0 = cpu_groups(r, pids)
                        proc = await asyncio.create_subprocess_exec(
                            *client_cmd(url, mode, headers, c, a.seconds, a.warmup),
                            stdout=asyncio.subprocess.PIPE)
                        try:
                            out, _ = await asyncio.wait_for(proc.communicate(), a.seconds + a.warmup + 60)
                        except TimeoutError:
                            proc.kill()
                            raise RuntimeError(f"{r} c={c}: the client hung (a reply never came)") from None
                        res = json.loads(out)
                        if res.get("errors"):
                            raise RuntimeError(f"{r} c={c}: {res['errors']}")
                        cpu1 = cpu_groups(r, pids)
                        res["cpu"] = {"client": res["client_cpu"] * 1000 / res["all"],
                                      **{k: (cpu1[k] - cpu0[k]) * 1000 / res["all"] for k in cpu1}}
                        await record(results, rnd, r, c, res, width=13)
            after = uptime()
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        redis_srv.stop()
        nats_srv.stop()
        if not a.keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)

    def med(r: str, c: int, k: str) -> float:
        return statistics.median(x[k] for x in results[(r, c)])

    print(f"before: {before}\nafter:  {after}\ncpus: {os.cpu_count()}  python {sys.version.split()[0]}  "
          f"sandbox {sandbox_mode}  {a.seconds:g} s per cell after {a.warmup:g} s warm-up, "
          f"{a.rounds} round(s), median of rounds")
    print("\n| path | c | p50 ms | p99 ms | calls/s | calls/s, every round |")
    print("|---|---:|---:|---:|---:|---|")
    for c in levels:
        for r in rows:
            each = " ".join(f"{x['rps']:.0f}" for x in results[(r, c)])
            print(f"| {r} | {c} | {med(r, c, 'p50'):.2f} | {med(r, c, 'p99'):.2f} | {med(r, c, 'rps'):.0f} | {each} |")
    print("\nCPU per call, ms (process CPU during the cell incl. warm-up / calls made; the stdio child is\n"
          "the proxy's descendants; nats+redis only on gateway rows):")
    print("\n| path | c | client | proxy | bridge | stdio child | nats+redis | total |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in levels:
        for r in rows:
            cpu = {k: statistics.median(x["cpu"][k] for x in results[(r, c)]) for k in results[(r, c)][0]["cpu"]}
            print(f"| {r} | {c} | {cpu['client']:.3f} | {cpu['proxy']:.3f} | "
                  + (f"{cpu['bridge']:.3f}" if "bridge" in cpu else "-") + f" | {cpu['child']:.3f} | "
                  + (f"{cpu['nats+redis']:.3f}" if "nats+redis" in cpu else "-") + f" | {sum(cpu.values()):.3f} |")
    if "gateway" in rows and "base-gateway" in rows:
        print("\ngateway - base-gateway, p50 per concurrency (median of rounds), beside each row's round-to-round"
              "\nspread of p50 (max - min over rounds):")
        for c in levels:
            now_p50 = [x["p50"] for x in results[("gateway", c)]]
            base_p50 = [x["p50"] for x in results[("base-gateway", c)]]
            print(f"  c={c}: {med('gateway', c, 'p50') - med('base-gateway', c, 'p50'):+.3f} ms"
                  f"  (spread: gateway {max(now_p50) - min(now_p50):.3f} ms,"
                  f" base-gateway {max(base_p50) - min(base_p50):.3f} ms)")
    if "direct" in rows and 1 in levels:
        base = med("direct", 1, "p50")
        print("\np50 overhead at c=1 over direct: " + ", ".join(
            f"{r} {med(r, 1, 'p50') - base:+.2f} ms" for r in rows if r != "direct"))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", default="main", choices=["main", "echo", "bridge", "client"])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--rows", default=",".join(ALL_ROWS))
    ap.add_argument("--profile-gateway", default="", help="run the gateway under cProfile, write stats here")
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--baseline-tree", default="", metavar="DIR",
                    help="also run DIR's gateway and bridge (a checkout of an earlier commit with its own .venv)")
    ap.add_argument("--gateway-env", action="append", default=[], metavar="NAME=VALUE",
                    help="an extra environment variable for the gateway (ablations: what a part costs)")
    ap.add_argument("--port-file", default="")
    ap.add_argument("--url", default="")
    ap.add_argument("--mode", default="2026")
    ap.add_argument("--slug", default="echo", help="the slug a --role bridge hosts")
    ap.add_argument("--headers", default="{}")
    a = ap.parse_args()
    if a.role == "echo":
        run_echo()
    elif a.role == "bridge":
        import uvloop

        uvloop.run(run_bridge(Path(a.port_file), a.slug))  # the deployer process runs on uvloop (deployer.main)
    elif a.role == "client":
        import uvloop

        r = uvloop.run(run_client([a.url], a.mode, json.loads(a.headers), int(a.concurrency), a.seconds, a.warmup))
        print(json.dumps(r))
    else:
        a.baseline_tree = Path(a.baseline_tree).resolve() if a.baseline_tree else None
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on SIGTERM too
        asyncio.run(main(a))
