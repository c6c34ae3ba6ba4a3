"""The egress proxy of hosted servers (wemcp.deployer.egress): real client libraries inside the real
sandbox (bubblewrap, and as root the restricted mode too) reach an allowed loopback stand-in for a
public API through the proxy only; nothing else — Postgres, NATS, Redis, any other loopback port, the
metadata address, private networks — directly or through the proxy. And the proxy's own rules over
plain sockets: the address policy at connect time, caps, what it records."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from services.deployer.tests.deployer_testkit import CACHE_DIR, self_signed
from wemcp.common import netpolicy
from wemcp.deployer import sandbox
from wemcp.deployer.child import ChildError, Command, EgressHook, StdioChild
from wemcp.deployer.egress import EgressProxy, ProxyPolicy, Refusal, _parse

HERE = Path(__file__).resolve().parent
PRELOAD = HERE.parent / "src" / "wemcp" / "deployer" / "runtime" / "egress_preload.js"
MODES = [*(["restricted"] if os.geteuid() == 0 else []), "bwrap"]
LIMITS = sandbox.Limits(memory_mb=512, cpu_seconds=60, max_processes=32, max_open_files=128)


# ---- a loopback stand-in for a public API (HTTP and HTTPS) ------------------------------------------

class _Api(BaseHTTPRequestHandler):
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.requestline)
        body = f"hello from api {self.headers.get('Host')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Api:
    http_port: int
    https_port: int
    ca: Path  # the self-signed certificate (for 127.0.0.1) clients trust
    seen: list[str]

    @property
    def allow(self) -> str:
        return f"127.0.0.1:{self.http_port},127.0.0.1:{self.https_port}"


@pytest.fixture
def root() -> Iterator[Path]:
    """The code root the sandbox sees (read-only there): the test servers, the CA, Node's preload."""
    r = CACHE_DIR / "run" / f"egress-{uuid.uuid4().hex[:8]}"
    r.mkdir(parents=True)
    os.chmod(r, 0o755)
    for name in ("client_server.py", "client_server.js"):
        shutil.copyfile(HERE / "egress" / name, r / name)
    shutil.copyfile(PRELOAD, r / "egress_preload.js")
    for p in r.iterdir():
        os.chmod(p, 0o644)
    yield r
    shutil.rmtree(r, ignore_errors=True)


@pytest.fixture
def api(root: Path) -> Iterator[Api]:
    seen: list[str] = []
    handler = type("Handler", (_Api,), {"seen": seen})
    plain = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    secure = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    cert, key = self_signed(root, "api.test", prefix="api-")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    secure.socket = ctx.wrap_socket(secure.socket, server_side=True)
    for srv in (plain, secure):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield Api(plain.server_address[1], secure.server_address[1], cert, seen)
    finally:
        for srv in (plain, secure):
            srv.shutdown()
            srv.server_close()


# ---- a hosted child with network, as the bridge starts it -------------------------------------------

@pytest_asyncio.fixture(params=MODES)
async def start(request: pytest.FixtureRequest, root: Path, api: Api) -> AsyncIterator[tuple[EgressProxy, object]]:
    caps = sandbox.probe(request.param)
    assert caps.refusal is None, caps.refusal
    proxy = EgressProxy(ProxyPolicy(api.allow))
    children: list[StdioChild] = []
    uid = 262001 + MODES.index(request.param)

    async def start_child(argv: list[str], *, network: bool = True, env: dict[str, str] | None = None) -> StdioChild:
        hook = EgressHook(proxy, "netted", "/usr/bin/python3", str(root / "egress_preload.js")) if network else None
        child = StdioChild(Command(argv, root, env or {}), caps=caps, limits=LIMITS, uid=uid,
                           run_dir=CACHE_DIR / "run" / f"egress-home-{uuid.uuid4().hex[:8]}", egress=hook,
                           start_timeout=30)
        await child.start()
        children.append(child)
        return child

    try:
        yield proxy, start_child
    finally:
        for c in children:
            await c.stop()
        await proxy.close()


async def tool(child: StdioChild, **args: object) -> str:
    reply = await child.request("tools/call", {"name": "net", "arguments": args}, timeout=30)
    return str(reply["result"]["content"][0]["text"])


def _hosts(proxy: EgressProxy) -> dict[str, dict[str, object]]:
    return {h["host"]: h for h in proxy.report("netted")["hosts"]}


async def test_python_server_reaches_the_allowed_api_through_the_proxy_only(start, api, root, infra):
    proxy, start_child = start
    child = await start_child(["/usr/bin/python3", str(root / "client_server.py")])
    env = json.loads(await tool(child, kind="env"))
    proxy_url = env["HTTPS_PROXY"]
    assert proxy_url.startswith("http://127.0.0.1:") and env["HTTP_PROXY"] == proxy_url, env
    # plain HTTP (forwarded) and HTTPS (CONNECT, TLS end to end with the API) with the standard library
    got = await tool(child, kind="get", lib="urllib", url=f"http://127.0.0.1:{api.http_port}/v1/items?key=s3cret")
    assert got == f"200 hello from api 127.0.0.1:{api.http_port}", got
    assert api.seen[-1] == "GET /v1/items?key=s3cret HTTP/1.1"  # origin-form upstream
    got = await tool(child, kind="get", lib="urllib", url=f"https://127.0.0.1:{api.https_port}/secure",
                     ca=str(api.ca))
    assert got.startswith("200 hello from api"), got

    # directly: nothing is reachable from the sandbox's own namespace, not even the allowed API
    pg, nats = urlsplit(infra.database_url).port, urlsplit(infra.nats_url).port
    redis = urlsplit(infra.redis_url).port
    for host, port in [("127.0.0.1", api.http_port), ("127.0.0.1", pg), ("127.0.0.1", nats), ("127.0.0.1", redis),
                       ("169.254.169.254", 80), ("10.0.0.1", 80)]:
        got = await tool(child, kind="connect", host=host, port=port)
        assert got.startswith("DENIED"), (host, port, got)
    # through the proxy: the address policy refuses every non-public destination
    for url, why in [(f"http://127.0.0.1:{pg}/", "loopback"), (f"http://localhost:{nats}/", "loopback"),
                     (f"http://127.0.0.1:{redis}/", "loopback"),
                     ("http://169.254.169.254/latest/meta-data/", "link-local"),
                     ("http://100.100.100.200/", "shared address space"), ("http://10.1.2.3/", "private"),
                     ("http://[::ffff:127.0.0.1]:80/", "loopback")]:
        got = await tool(child, kind="get", lib="urllib", url=url)
        assert got.startswith("403 ") and why in got, (url, got)
    got = await tool(child, kind="get", lib="urllib", url=f"https://127.0.0.1:{pg}/", ca=str(api.ca))
    assert "403" in got and "Forbidden" in got, got  # CONNECT refused the same way

    hosts = _hosts(proxy)
    assert hosts[f"127.0.0.1:{api.http_port}"]["connections"] == 1
    assert hosts[f"127.0.0.1:{api.https_port}"]["connections"] == 1
    assert hosts["169.254.169.254:80"]["refused"] == 1 and hosts["169.254.169.254:80"]["connections"] == 0
    assert hosts[f"127.0.0.1:{pg}"]["refused"] == 2
    # host names and ports only: no path, no query, no body
    assert "items" not in json.dumps(proxy.report("netted")) and "s3cret" not in json.dumps(proxy.report("netted"))


async def test_node_server_clients_use_the_proxy_without_being_told(start, api, root, infra):
    proxy, start_child = start
    child = await start_child(["/usr/bin/node", str(root / "client_server.js")],
                              env={"NODE_EXTRA_CA_CERTS": str(api.ca)})
    for lib, scheme, port in [("fetch", "http", api.http_port), ("fetch", "https", api.https_port),
                              ("http", "http", api.http_port), ("https", "https", api.https_port)]:
        got = await tool(child, kind="get", lib=lib, url=f"{scheme}://127.0.0.1:{port}/{lib}")
        assert got == f"200 hello from api 127.0.0.1:{port}", (lib, scheme, got)
    pg = urlsplit(infra.database_url).port
    got = await tool(child, kind="get", lib="fetch", url=f"http://127.0.0.1:{pg}/")
    assert got.startswith("ERROR egress proxy refused") and "loopback" in got, got
    got = await tool(child, kind="get", lib="https", url="https://169.254.169.254/")
    assert got.startswith("ERROR") and "link-local" in got, got
    got = await tool(child, kind="connect", host="127.0.0.1", port=api.http_port)
    assert got.startswith("DENIED"), got
    assert _hosts(proxy)[f"127.0.0.1:{api.https_port}"]["connections"] == 2


async def test_server_without_network_gets_no_proxy(start, api, root):
    proxy, start_child = start
    child = await start_child(["/usr/bin/python3", str(root / "client_server.py")], network=False)
    assert json.loads(await tool(child, kind="env")) == {}
    got = await tool(child, kind="get", lib="urllib", url=f"http://127.0.0.1:{api.http_port}/")
    assert got.startswith("ERROR"), got
    assert proxy.report("netted")["hosts"] == []


HIJACK = """\
import os, socket
_send = socket.send_fds
def send_fds(sock, buffers, fds, *rest):
    if os.environ.get("HIJACK") == "udp":
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    elif os.environ.get("HIJACK") == "file":
        other = open("/dev/null")
    else:
        other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # bound nowhere, not listening
    return _send(sock, buffers, [other.fileno()], *rest)
socket.send_fds = send_fds
"""


@pytest.mark.parametrize("kind", ["udp", "file", "unbound"])
async def test_a_hijacked_launcher_cannot_hand_over_anything_else(start, root, kind):
    """Code that runs before the launcher (a sitecustomize on a PYTHONPATH the spec's env names) hands
    the deployer a UDP socket, a file or a socket that is not listening: the child is refused and
    stopped, the proxy serves nothing for it."""
    proxy, start_child = start
    (root / "hijack").mkdir()
    (root / "hijack" / "sitecustomize.py").write_text(HIJACK)
    os.chmod(root / "hijack", 0o755)
    os.chmod(root / "hijack" / "sitecustomize.py", 0o644)
    with pytest.raises(ChildError, match="handed over something unusable"):
        await start_child(["/usr/bin/python3", str(root / "client_server.py")],
                          env={"PYTHONPATH": str(root / "hijack"), "HIJACK": kind})
    assert proxy._servers == {}


async def test_the_proxy_listener_goes_with_the_child(start, api, root):
    proxy, start_child = start
    child = await start_child(["/usr/bin/python3", str(root / "client_server.py")])
    assert len(proxy._servers) == 1
    await child.stop()
    assert proxy._servers == {}


# ---- the proxy's rules, over plain loopback sockets -------------------------------------------------

@pytest_asyncio.fixture
async def plain_proxy(api: Api) -> AsyncIterator[tuple[EgressProxy, int]]:
    proxy = EgressProxy(ProxyPolicy(api.allow), max_connections=2, max_bytes_per_hour=4096)
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen()
    port = lst.getsockname()[1]
    await proxy.attach("netted", lst)
    try:
        yield proxy, port
    finally:
        await proxy.close()


async def _ask(port: int, head: bytes) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    status = await reader.readuntil(b"\r\n\r\n")
    return status, reader, writer


async def test_connection_cap_refuses_with_429(plain_proxy, api):
    _, port = plain_proxy
    held = []
    for _ in range(2):
        status, _r, w = await _ask(port, f"CONNECT 127.0.0.1:{api.http_port} HTTP/1.1\r\n\r\n".encode())
        assert status.startswith(b"HTTP/1.1 200"), status
        held.append(w)
    # over the cap a connection is answered at once, before it sends anything (idle ones count too)
    r, w = await asyncio.open_connection("127.0.0.1", port)
    status = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
    assert status.startswith(b"HTTP/1.1 429"), status
    assert b"connections open" in await r.read()
    w.close()
    for w in held:
        w.close()


async def test_byte_budget_cuts_and_refuses(plain_proxy, api):
    _, port = plain_proxy
    status, r, w = await _ask(port, f"CONNECT 127.0.0.1:{api.http_port} HTTP/1.1\r\n\r\n".encode())
    assert status.startswith(b"HTTP/1.1 200")
    w.write(b"GET /" + b"x" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")  # over the 4096-byte budget
    await w.drain()
    assert await asyncio.wait_for(r.read(), 10) == b""  # cut, nothing forwarded back
    w.close()
    status, r, w = await _ask(port, f"CONNECT 127.0.0.1:{api.http_port} HTTP/1.1\r\n\r\n".encode())
    assert status.startswith(b"HTTP/1.1 429"), status
    assert b"this hour" in await asyncio.wait_for(r.read(), 5)
    w.close()


async def test_mail_ports_and_bad_requests_are_refused(plain_proxy):
    _, port = plain_proxy
    status, r, w = await _ask(port, b"CONNECT smtp.example.com:25 HTTP/1.1\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 403") and b"mail" in await r.read()
    w.close()
    for head in (b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n", b"GET ftp://x/ HTTP/1.1\r\n\r\n",
                 b"CONNECT example.com HTTP/1.1\r\n\r\n", b"GET http://u:p@example.com/ HTTP/1.1\r\n\r\n",
                 b"NONSENSE\r\n\r\n"):
        status, r, w = await _ask(port, head)
        assert status.startswith(b"HTTP/1.1 400"), (head, status)
        w.close()


async def test_dns_rebinding_is_refused_at_connect_time(plain_proxy, monkeypatch):
    """A name that answers a public address and a loopback one is refused whole; the proxy connects
    to what it checked, never resolving twice."""
    proxy, port = plain_proxy

    async def rebinding(host: str, port: int) -> list[tuple[int, str]]:
        return [(socket.AF_INET, "93.184.216.34"), (socket.AF_INET, "127.0.0.1")]

    monkeypatch.setattr(netpolicy, "resolve", rebinding)
    status, r, w = await _ask(port, b"CONNECT rebind.example:443 HTTP/1.1\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 403") and b"loopback" in await r.read()
    w.close()
    assert _hosts(proxy)["rebind.example:443"]["last_refusal"] == "loopback"


async def test_pinholes_open_one_port_not_the_address(api):
    policy = ProxyPolicy(f"127.0.0.1:{api.http_port},api.internal:8443,10.9.0.0/16")
    assert await policy.resolve("127.0.0.1", api.http_port) == [(socket.AF_INET, "127.0.0.1")]
    with pytest.raises(netpolicy.EgressRefused, match="loopback"):
        await policy.resolve("127.0.0.1", api.http_port + 1)
    assert await policy.resolve("10.9.1.1", 80)  # a plain entry: the policy's own allow-list
    with pytest.raises(netpolicy.EgressRefused, match="private"):
        await policy.resolve("10.8.1.1", 80)
    with pytest.raises(ValueError):
        ProxyPolicy("127.0.0.1:notaport")
    # package registries are not allowed by name for hosted code
    assert not ProxyPolicy("").base.hosts


async def test_a_public_address_of_this_machine_is_refused(monkeypatch):
    """A public address of the deployer's own machine reaches whatever listens on all interfaces
    there (a database bound to 0.0.0.0): refused like the loopback, by literal and by name."""
    own = "93.184.216.34"

    async def public(host: str, port: int) -> list[tuple[int, str]]:
        return [(socket.AF_INET, own)]

    monkeypatch.setattr(netpolicy, "resolve", public)
    policy = ProxyPolicy("", local_addresses=lambda: {own, "127.0.0.1"})
    for host in (own, "db.example.com"):
        with pytest.raises(netpolicy.EgressRefused, match="an address of this machine"):
            await policy.resolve(host, 5432)
    # control: the same address is fine when it is not this machine's
    assert await ProxyPolicy("", local_addresses=lambda: {"127.0.0.1"}).resolve("db.example.com", 5432)
    # the machine's real interface addresses are found (the loopback at least)
    from wemcp.deployer.egress import machine_addresses

    assert "127.0.0.1" in machine_addresses()


def test_plain_requests_are_rewritten_to_origin_form():
    method, host, port, out = _parse(b"GET http://API.example.com:8080/a/b?c=d HTTP/1.1\r\n"
                                     b"Host: api.example.com:8080\r\nProxy-Connection: keep-alive\r\n"
                                     b"Proxy-Authorization: x\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n")
    assert (method, host, port) == (b"GET", "api.example.com", 8080)
    assert out == (b"GET /a/b?c=d HTTP/1.1\r\nHost: api.example.com:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n")
    with pytest.raises(Refusal):
        _parse(b"GET https://x/ HTTP/1.1\r\n\r\n")
