"""Loopback stand-ins for what the naming rules ask outside the platform: GitHub's REST API (the
documented shapes of ``GET /users/{username}``, ``GET /orgs/{org}/members/{username}`` and
``GET /orgs/{org}/public_members/{username}``), a DNS server (RFC 1035 wire format over UDP and
TCP, answers with name compression, truncation over UDP for big answers) and a web server serving
``/.well-known/mcp-registry-auth`` per Host."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from wemcp.devstack.infra import free_port
from wemcp.devstack.testing import serve_app

NOT_FOUND = {"message": "Not Found", "documentation_url": "https://docs.github.com/rest", "status": "404"}


@dataclass
class GitHubStandIn:
    """``users``: login -> account id. ``orgs``: org -> {member login: public?}. With a token
    (``Authorization: Bearer <token>`` of an org member, here: any token) private memberships are
    visible; without one GitHub answers 302 to the public list, as it does for non-members."""

    users: dict[str, int] = field(default_factory=dict)
    orgs: dict[str, dict[str, bool]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    url: str = ""

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, RedirectResponse, Response
        from starlette.routing import Route

        async def user(request: Request) -> Response:
            login = request.path_params["login"]
            self.hits.append(f"users/{login}")
            for name, uid in self.users.items():
                if name.lower() == login.lower():
                    return JSONResponse({"login": name, "id": uid, "type": "User",
                                         "url": f"{self.url}/users/{name}"})
            return JSONResponse(NOT_FOUND, status_code=404)

        async def members(request: Request) -> Response:
            org, login = request.path_params["org"], request.path_params["login"]
            self.hits.append(f"orgs/{org}/members/{login}")
            if org not in self.orgs:
                return JSONResponse(NOT_FOUND, status_code=404)
            if not request.headers.get("authorization"):
                return RedirectResponse(f"{self.url}/orgs/{org}/public_members/{login}", status_code=302)
            return Response(status_code=204 if login in self.orgs[org] else 404)

        async def public_members(request: Request) -> Response:
            org, login = request.path_params["org"], request.path_params["login"]
            self.hits.append(f"orgs/{org}/public_members/{login}")
            return Response(status_code=204 if self.orgs.get(org, {}).get(login) else 404)

        return Starlette(routes=[Route("/users/{login}", user), Route("/orgs/{org}/members/{login}", members),
                                 Route("/orgs/{org}/public_members/{login}", public_members)])


@contextlib.asynccontextmanager
async def github_stand_in(gh: GitHubStandIn) -> AsyncIterator[GitHubStandIn]:
    port = free_port()
    gh.url = f"http://127.0.0.1:{port}"
    async with serve_app(gh.app(), port):
        yield gh


class DnsStandIn:
    """TXT records per name (lower-case); NXDOMAIN for unknown names. Answers longer than 512
    bytes over UDP come back truncated (TC), in full over TCP."""

    def __init__(self) -> None:
        self.txt: dict[str, list[str]] = {}
        self.queries: list[tuple[str, str]] = []
        self.port = 0

    def answer(self, query: bytes, udp: bool) -> bytes:
        qid = struct.unpack("!H", query[:2])[0]
        off, labels = 12, []
        while query[off]:
            labels.append(query[off + 1:off + 1 + query[off]].decode())
            off += 1 + query[off]
        question = query[12:off + 5]
        name = ".".join(labels).lower()
        qtype = struct.unpack("!H", query[off + 1:off + 3])[0]
        self.queries.append(("udp" if udp else "tcp", name))
        if name not in self.txt:
            return struct.pack("!HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question
        answers = b""
        records = self.txt[name] if qtype == 16 else []
        for rec in records:
            raw = rec.encode()
            rdata = b"".join(bytes([len(raw[i:i + 255])]) + raw[i:i + 255] for i in range(0, len(raw), 255))
            answers += struct.pack("!HHHIH", 0xC00C, 16, 1, 60, len(rdata)) + rdata  # name: pointer to the question
        msg = struct.pack("!HHHHHH", qid, 0x8180, 1, len(records), 0, 0) + question + answers
        if udp and len(msg) > 512:
            return struct.pack("!HHHHHH", qid, 0x8380, 1, 0, 0, 0) + question
        return msg


@contextlib.asynccontextmanager
async def dns_stand_in() -> AsyncIterator[DnsStandIn]:
    dns = DnsStandIn()
    loop = asyncio.get_running_loop()

    class Udp(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(dns.answer(data, udp=True), addr)

    async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        reply = dns.answer(await reader.readexactly(size), udp=False)
        writer.write(struct.pack("!H", len(reply)) + reply)
        await writer.drain()
        writer.close()

    for _ in range(20):  # one port number for both protocols, as DNS servers listen
        port = free_port()
        try:
            server = await asyncio.start_server(tcp, "127.0.0.1", port)
        except OSError:
            continue
        try:
            transport, _ = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", port))
        except OSError:
            server.close()
            continue
        break
    else:  # pragma: no cover
        raise RuntimeError("no free port for the DNS stand-in")
    dns.port = port
    try:
        yield dns
    finally:
        transport.close()
        server.close()
        await server.wait_closed()


class WellKnownStandIn:
    """``GET /.well-known/mcp-registry-auth`` per Host header (the domain asked); 404 otherwise."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.port = 0

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import PlainTextResponse, Response
        from starlette.routing import Route

        async def proof(request: Request) -> Response:
            host = (request.headers.get("host") or "").split(":")[0].lower()
            if host not in self.files:
                return PlainTextResponse("not here", status_code=404)
            return PlainTextResponse(self.files[host])

        return Starlette(routes=[Route("/.well-known/mcp-registry-auth", proof)])


@contextlib.asynccontextmanager
async def well_known_stand_in() -> AsyncIterator[WellKnownStandIn]:
    w = WellKnownStandIn()
    w.port = free_port()
    async with serve_app(w.app(), w.port):
        yield w
