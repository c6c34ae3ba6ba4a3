"""The egress proxy of hosted servers: the only way out of a sandbox that asked for ``"network": true``.

**Where it runs.** In the deployer process, on the bridge's event loop: no process per server and
none for the platform, and the host records are in the same process as the API that shows them.
What it costs is CPU on the bridge's loop for egress bytes (servers call APIs: small, bursty
traffic); a deployment that needs bulk transfer is capped by ``max_bytes`` anyway.

**How the sandbox reaches it** (no route, no DNS, no other address). A server with network still
gets an empty network namespace of its own (only its own loopback). Before the server's command
runs, a tiny launcher inside the sandbox (:data:`LAUNCHER`, run by the sandbox's own python) binds
a listening socket on ``127.0.0.1:<free port>`` *in the sandbox's namespace*, hands that socket to
the deployer over an inherited socketpair (``SCM_RIGHTS``), sets ``HTTP_PROXY``/``HTTPS_PROXY`` to
it and ``exec``\\ s the server. The deployer accepts on the handed socket: every connection on it
comes from that one server (attribution needs no credential), and nothing else listens in that
namespace. No extra process per server, one descriptor; the launcher adds one python start-up to
the child's start (measured in bench/README.md).

**What it forwards.** ``CONNECT host:port`` (TLS and anything else tunnelled) and plain HTTP in
absolute form (``GET http://host/path``; one request per connection, ``Connection: close``).
Every destination is checked at connect time by the shared address policy
(:class:`wemcp.common.netpolicy.EgressPolicy`: global addresses only — loopback, private,
link-local and the metadata address, CGNAT, … are refused; the name is resolved once and the
connection goes to a checked address). The proxy's own allow-list (``egress_proxy_allow``) takes
``host:port`` pinholes besides the policy's entries, so a test can open one loopback port (its
stand-in "public" API) without opening the loopback (Postgres, NATS, the gateway). Mail ports are
refused (spam from hosted code).

**Caps** per server: open connections, and bytes (both directions) per hour; over either, new
connections are refused (429) and, for bytes, open ones are cut.

**Records** per server: host names and ports it connected to (or was refused), with counts, bytes
and the last time — never paths, queries, headers or bodies. Kept in memory, bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from wemcp.common import netpolicy
from wemcp.common.logging import get_logger
from wemcp.common.netpolicy import EgressPolicy, EgressRefused

log = get_logger("wemcp.deployer.egress")

MAX_HEAD = 64 * 1024
CHUNK = 64 * 1024
MAX_HOSTS = 200  # per server, least recently used dropped
MAIL_PORTS = frozenset({25, 465, 587})
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization",
                        b"proxy-authenticate", b"te", b"trailer", b"upgrade"})

# Run inside the sandbox (``python3 -c LAUNCHER <argv...>``) by the sandbox's own interpreter: binds
# the proxy's address in the sandbox's network namespace, hands the socket to the deployer, then
# becomes the server. Standard library only; the socketpair's number is in WEMCP_EGRESS_FD.
LAUNCHER = """\
import os, socket, sys
fd = int(os.environ.pop("WEMCP_EGRESS_FD"))
ctl = socket.socket(fileno=fd)
lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lst.bind(("127.0.0.1", 0))
lst.listen(128)
port = lst.getsockname()[1]
socket.send_fds(ctl, [b"%d" % port], [lst.fileno()])
lst.close()
ctl.close()
url = "http://127.0.0.1:%d" % port
for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "GLOBAL_AGENT_HTTP_PROXY"):
    os.environ[k] = url
for k in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(k, None)
os.execv(sys.argv[1], sys.argv[1:])
"""


class ProxyPolicy:
    """The shared :class:`EgressPolicy` (its ``allow`` entries) plus ``host:port`` pinholes: a pinned
    name or address is admitted on that port only. Package registries are *not* allowed by name
    here: hosted code has no business with a private mirror."""

    def __init__(self, allow: str = "", *, local_addresses: Callable[[], set[str]] | None = None) -> None:
        local_addresses = local_addresses or machine_addresses
        plain: list[str] = []
        self.pinned_hosts: set[tuple[str, int]] = set()
        self.pinned_nets: list[tuple[netpolicy.Network, int]] = []
        for raw in allow.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            host, port = _split_pin(entry)
            if port is None:
                plain.append(entry)
                continue
            try:
                self.pinned_nets.append((ipaddress.ip_network(host, strict=False), port))
            except ValueError:
                netpolicy.parse_allow([host])  # a valid host name, or ValueError
                self.pinned_hosts.add((host.rstrip("."), port))
        self.base = EgressPolicy(plain, registries=False)
        self.local_addresses = local_addresses
        self._local: frozenset[str] = frozenset()
        self._local_at = -1e9

    def _own(self, address: str) -> bool:
        """One of this machine's own addresses: a public address of the host reaches whatever listens
        on all interfaces here (a database bound to 0.0.0.0), so it is refused like the loopback."""
        now = time.monotonic()
        if now - self._local_at > 60:
            self._local, self._local_at = frozenset(self.local_addresses()), now
        ip = netpolicy.literal(address)
        return ip is not None and str(ip) in self._local

    def _explicit(self, host: str, address: str, port: int) -> bool:
        """Allowed by an entry of the allow-list (a pinhole, the host's name, a network of it)."""
        ip = netpolicy.literal(address)
        return (self._pinned(address, port) or self.base.host_allowed(host)
                or (ip is not None and any(ip.version == n.version and ip in n for n in self.base.networks)))

    def _pinned(self, address: str, port: int) -> bool:
        ip = netpolicy.literal(address)
        return ip is not None and any(p == port and ip.version == n.version and ip in n for n, p in self.pinned_nets)

    async def resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        """Checked addresses of ``host`` (all of them), or :class:`EgressRefused`."""
        host = host.strip("[]").lower().rstrip(".")
        if (host, port) in self.pinned_hosts:
            return await netpolicy.resolve(host, port)
        if not self.pinned_nets:
            pairs = await self.base.resolve(host, port)
        else:
            literal = netpolicy.literal(host)
            pairs = [(int(socket.AF_INET6 if literal.version == 6 else socket.AF_INET), host)] if literal else \
                await netpolicy.resolve(host, port)
            if not pairs:
                raise OSError(f"{host!r} does not resolve")
            if literal is None and self.base.host_allowed(host):
                return pairs
            for _, address in pairs:
                if self._pinned(address, port):
                    continue
                refused = self.base.refusal(host, address)
                if refused is not None:
                    log.warning("egress_refused", host=refused.host, reason=refused.reason, address=refused.address)
                    raise refused
        for _, address in pairs:
            if self._own(address) and not self._explicit(host, address, port):
                log.warning("egress_refused", host=host, reason="this machine", address=address)
                raise EgressRefused(host, "an address of this machine", address)
        return pairs


def machine_addresses() -> set[str]:
    """Every address of this machine's interfaces."""
    import psutil

    out = set()
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                ip = netpolicy.literal(a.address)
                if ip is not None:
                    out.add(str(ip))
    return out


def _split_pin(entry: str) -> tuple[str, int | None]:
    """``host:port`` / ``[v6]:port`` / ``1.2.3.4:port`` → (host, port); anything else (a host, an
    address, a CIDR, a bare IPv6 address) → (entry, None)."""
    if entry.startswith("["):
        inside, _, rest = entry[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            return inside, _port(rest[1:])
        return entry, None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        if port.isdigit():
            return host, _port(port)
        raise ValueError(f"{entry!r}: the port must be a number")
    return entry, None


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    return port


@dataclass
class HostRecord:
    connections: int = 0
    refused: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    last_at: float = 0.0
    last_refusal: str | None = None


@dataclass
class Usage:
    """One server's egress: open connections, its byte window and the hosts it reached."""

    open: int = 0
    window_start: float = field(default_factory=time.monotonic)
    window_bytes: int = 0
    total_bytes: int = 0
    hosts: OrderedDict[str, HostRecord] = field(default_factory=OrderedDict)

    def host(self, name: str) -> HostRecord:
        rec = self.hosts.pop(name, None) or HostRecord()
        self.hosts[name] = rec  # most recent last
        while len(self.hosts) > MAX_HOSTS:
            self.hosts.popitem(last=False)
        rec.last_at = time.time()
        return rec


class Refusal(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


class EgressProxy:
    def __init__(self, policy: ProxyPolicy, *, max_connections: int = 32, max_bytes_per_hour: int = 1 << 30,
                 connect_timeout: float = 10.0, idle_timeout: float = 300.0,
                 denied_ports: frozenset[int] = MAIL_PORTS) -> None:
        self.policy = policy
        self.max_connections = max_connections
        self.max_bytes = max_bytes_per_hour
        self.window = 3600.0
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.denied_ports = denied_ports
        self.usage: dict[str, Usage] = {}
        self._servers: dict[int, tuple[str, asyncio.Server]] = {}

    # ------------------------------------------------------------------ listeners (one per child)
    async def attach(self, slug: str, sock: socket.socket) -> int:
        """Serve the listening socket a sandbox handed over, on behalf of ``slug``. Returns a handle
        for :meth:`detach`."""
        sock.setblocking(False)
        server = await asyncio.start_server(lambda r, w: self._handle(slug, r, w), sock=sock, limit=MAX_HEAD)
        handle = sock.fileno()
        self._servers[handle] = (slug, server)
        self.usage.setdefault(slug, Usage())
        return handle

    async def detach(self, handle: int) -> None:
        entry = self._servers.pop(handle, None)
        if entry is not None:
            entry[1].close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(entry[1].wait_closed(), 1)

    async def close(self) -> None:
        for handle in list(self._servers):
            await self.detach(handle)

    def forget(self, slug: str) -> None:
        self.usage.pop(slug, None)

    def report(self, slug: str) -> dict[str, Any]:
        """What the server's page shows: hosts (no paths, no bodies), counts, bytes, the caps."""
        u = self.usage.get(slug)
        hosts = [] if u is None else [
            {"host": name, "connections": r.connections, "refused": r.refused, "bytes_out": r.bytes_out,
             "bytes_in": r.bytes_in, "last_at": datetime.fromtimestamp(r.last_at, UTC).isoformat(),
             "last_refusal": r.last_refusal}
            for name, r in reversed(u.hosts.items())]
        return {"hosts": hosts, "open_connections": u.open if u else 0, "bytes": u.total_bytes if u else 0,
                "limits": {"max_connections": self.max_connections, "max_bytes_per_hour": self.max_bytes}}

    # ------------------------------------------------------------------ one client connection
    def _count(self, u: Usage, n: int) -> bool:
        """Add ``n`` bytes to the window; False once the budget is spent."""
        now = time.monotonic()
        if now - u.window_start >= self.window:
            u.window_start, u.window_bytes = now, 0
        u.window_bytes += n
        u.total_bytes += n
        return u.window_bytes <= self.max_bytes

    async def _handle(self, slug: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        u = self.usage.setdefault(slug, Usage())
        u.open += 1
        target = ""
        try:
            if u.open > self.max_connections:  # before reading anything: idle connections count too
                await _answer(writer, 429, f"this server has {self.max_connections} connections open; close some")
                return
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                return
            try:
                method, host, port, rest = _parse(head)
                target = f"{host}:{port}"
                if u.window_bytes >= self.max_bytes and time.monotonic() - u.window_start < self.window:
                    raise Refusal(429, "byte budget spent",
                                  f"this server sent and received {self.max_bytes} bytes this hour")
                if port in self.denied_ports:
                    raise Refusal(403, f"port {port} refused", f"port {port} (mail) is not reachable from "
                                  "hosted servers")
                up_reader, up_writer = await self._connect(host, port)
            except Refusal as exc:
                if target:
                    rec = u.host(target)
                    rec.refused += 1
                    rec.last_refusal = exc.reason
                await _answer(writer, exc.status, str(exc))
                return
            rec = u.host(target)
            rec.connections += 1
            try:
                if method == b"CONNECT":
                    writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    await writer.drain()
                else:
                    up_writer.write(rest)
                    self._count(u, len(rest))
                    rec.bytes_out += len(rest)
                await self._pipe(u, rec, reader, writer, up_reader, up_writer)
            finally:
                up_writer.close()
        except Exception as exc:  # one client's trouble never reaches the loop
            log.info("egress_connection_failed", slug=slug, target=target, error=type(exc).__name__)
        finally:
            u.open -= 1
            writer.close()

    async def _connect(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            pairs = await asyncio.wait_for(self.policy.resolve(host, port), self.connect_timeout)
        except EgressRefused as exc:
            raise Refusal(403, exc.reason, str(exc)) from None
        except (OSError, TimeoutError):
            raise Refusal(502, "does not resolve", f"{host!r} does not resolve") from None
        last = "no address"
        for _, address in pairs:
            try:
                return await asyncio.wait_for(asyncio.open_connection(address, port, limit=CHUNK),
                                              self.connect_timeout)
            except (OSError, TimeoutError) as exc:
                last = type(exc).__name__
        raise Refusal(502, "connect failed", f"{host}:{port} did not accept the connection ({last})")

    async def _pipe(self, u: Usage, rec: HostRecord, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        async def one_way(src: asyncio.StreamReader, dst: asyncio.StreamWriter, outbound: bool) -> None:
            while True:
                data = await asyncio.wait_for(src.read(CHUNK), self.idle_timeout)
                if not data:
                    with contextlib.suppress(OSError):
                        if dst.can_write_eof():
                            dst.write_eof()
                    return
                if outbound:
                    rec.bytes_out += len(data)
                else:
                    rec.bytes_in += len(data)
                if not self._count(u, len(data)):
                    raise ConnectionAbortedError("byte budget spent")
                dst.write(data)
                await dst.drain()

        outbound = asyncio.create_task(one_way(reader, up_writer, True))
        inbound = asyncio.create_task(one_way(up_reader, writer, False))
        try:
            # the upstream's end (or any failure) ends the connection; the client's end of sending
            # (a half-close) only ends that direction
            done, _ = await asyncio.wait([outbound, inbound], return_when=asyncio.FIRST_COMPLETED)
            if inbound not in done and outbound.exception() is None:
                await asyncio.wait([inbound])
        finally:
            for t in (outbound, inbound):
                t.cancel()
            await asyncio.gather(outbound, inbound, return_exceptions=True)


def _parse(head: bytes) -> tuple[bytes, str, int, bytes]:
    """(method, host, port, the request to send upstream) of a proxy request; :class:`Refusal` (400)
    on anything else. For plain HTTP the request line becomes origin-form, hop-by-hop headers are
    dropped and ``Connection: close`` added (one request per connection)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise Refusal(400, "bad request", "not an HTTP/1.x proxy request")
    method, target, version = parts
    try:
        if method == b"CONNECT":
            host, port = _host_port(target.decode("ascii"), None)
            return method, host, port, b""
        text = target.decode("ascii")
        scheme, sep, rest = text.partition("://")
        if not sep or scheme.lower() != "http":
            raise Refusal(400, "bad request", "plain requests must use an absolute http:// URL; use CONNECT "
                          "for https")
        authority, slash, path = rest.partition("/")
        path = "/" + path if slash else "/"
        if "@" in authority:
            raise Refusal(400, "bad request", "credentials in the URL are not forwarded")
        host, port = _host_port(authority, 80)
    except (UnicodeDecodeError, ValueError):
        raise Refusal(400, "bad request", "the request target is not a valid host and port") from None
    headers = [h for h in lines[1:] if h and h.split(b":", 1)[0].strip().lower() not in HOP_BY_HOP]
    out = b"\r\n".join([method + b" " + path.encode("ascii") + b" " + version, *headers,
                        b"Connection: close", b"", b""])
    return method, host, port, out


def _host_port(authority: str, default: int | None) -> tuple[str, int]:
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = authority.rpartition(":") if ":" in authority else (authority, "", "")
    if not port_text:
        if default is None:
            raise ValueError("CONNECT needs a port")
        port = default
    else:
        port = _port(port_text)
    host = host.strip().lower()
    if not host or any(c in host for c in "/ \t@"):
        raise ValueError("no host")
    return host, port


async def _answer(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 429: "Too Many Requests", 502: "Bad Gateway"}.get(status, "Error")
    body = (message + "\n").encode()
    writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
