"""The egress policy: which addresses, checked when, through which clients; and the header rules."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
import pytest

from wemcp.common import netpolicy
from wemcp.common.config import ServiceSettings
from wemcp.common.netpolicy import (
    EgressPolicy,
    EgressRefused,
    address_refusal,
    outbound,
    refusal_in,
    registry_hosts,
    registry_urls,
    reserved_header,
)

REFUSED = [
    "127.0.0.1", "127.1.2.3", "0.0.0.0", "0.1.2.3", "10.0.0.1", "172.16.5.4", "192.168.1.1",
    "100.64.0.1", "100.100.100.200", "100.127.255.254",  # shared address space; Aliyun's metadata
    "169.254.169.254", "168.63.129.16", "192.0.0.192", "198.18.0.1", "192.0.2.1", "203.0.113.80",
    "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
    "::", "::1", "fe80::1", "fe80::1%1", "fc00::1", "fd00::1", "fd00:ec2::254", "fec0::1", "ff02::1", "ff0e::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:100.100.100.200", "::ffff:169.254.169.254",  # IPv4-mapped
    "::127.0.0.1", "::8.8.8.8",  # IPv4-compatible (deprecated, never a real destination)
    "2002:7f00:1::", "2002:a9fe:a9fe::1",  # 6to4 of 127.0.0.1 and 169.254.169.254
    "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b:1::1",  # NAT64 of private addresses; local-use NAT64
    "2001::1", "2001:db8::1", "100::1",  # Teredo, documentation, discard
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8",
           "2002:808:808::1", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", REFUSED)
def test_refused_addresses(address):
    assert address_refusal(ipaddress.ip_address(address.split("%")[0]) if "%" not in address
                           else ipaddress.IPv6Address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses(address):
    assert address_refusal(ipaddress.ip_address(address)) is None


def answers(*rounds: list[str]):
    """A resolver answering each round in turn (the last one from then on): DNS rebinding."""
    calls: list[str] = []

    async def fake(host: str, port: int) -> list[tuple[int, str]]:
        calls.append(host)
        got = rounds[min(len(calls), len(rounds)) - 1]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, a) for a in got]

    fake.calls = calls  # type: ignore[attr-defined]
    return fake


async def test_every_address_is_checked_and_allow_list_works(monkeypatch):
    p = EgressPolicy(registries=False)
    monkeypatch.setattr(netpolicy, "resolve", answers(["8.8.8.8", "10.0.0.5"]))
    with pytest.raises(EgressRefused) as e:
        await p.resolve("mixed.example", 443)
    assert e.value.reason == "private" and e.value.address == "10.0.0.5"
    assert "10.0.0.5" not in str(e.value) and "mixed.example" in str(e.value)  # the caller is not told the address
    p.add("10.0.0.0/24")
    assert [a for _, a in await p.resolve("mixed.example", 443)] == ["8.8.8.8", "10.0.0.5"]
    q = EgressPolicy("internal.example, *.corp.example", registries=False)
    monkeypatch.setattr(netpolicy, "resolve", answers(["127.0.0.1"]))
    assert await q.resolve("internal.example", 80) and await q.resolve("a.b.corp.example", 80)
    with pytest.raises(EgressRefused):
        await q.resolve("corp.example.evil", 80)
    with pytest.raises(EgressRefused):  # a literal never reaches the resolver, and is checked too
        await q.resolve("[::ffff:127.0.0.1]", 80)


def test_allow_list_setting_is_validated():
    s = ServiceSettings(egress_allow="127.0.0.1, 10.0.0.0/8,api.internal")
    assert {"api.internal"} <= s.egress.hosts and len(s.egress.networks) == 2
    assert s.egress is s.egress  # one policy per process
    with pytest.raises(ValueError):
        ServiceSettings(egress_allow="http://x/y")


def test_url_shape():
    p = EgressPolicy(registries=False)
    assert p.check_url("https://api.example.com/v1") == ("https", "api.example.com", 443)
    for bad in ("ftp://x/", "file:///etc/passwd", "http://user:pw@x/", "http:///nohost", "http://x:99999/"):
        with pytest.raises(ValueError):
            p.check_url(bad)


def test_registries_come_from_pip_and_npm_configuration(tmp_path: Path):
    (tmp_path / ".npmrc").write_text("fund=false\nregistry=https://npm.mirror.example/\n")
    (tmp_path / ".config/pip").mkdir(parents=True)
    (tmp_path / ".config/pip/pip.conf").write_text("[global]\nindex-url = https://pypi.mirror.example/simple\n"
                                                   "extra-index-url = file:///opt/x https://extra.example/s\n")
    hosts = registry_hosts({"UV_INDEX_URL": "https://uv.example/simple"}, tmp_path)
    assert {"npm.mirror.example", "pypi.mirror.example", "extra.example", "uv.example"} <= hosts
    assert "pypi.org" not in hosts  # an index is configured: pip's default is not used
    bare = registry_hosts({}, tmp_path / "nothing")
    assert "registry.npmjs.org" in bare


def test_registry_urls_by_ecosystem_default_first(tmp_path: Path):
    """What the catalog resolves unpinned packages against: the registry an installer uses by
    default first, scoped npm registries apart (and still allowed by name)."""
    (tmp_path / ".npmrc").write_text("@corp:registry=https://npm.corp.example/\nregistry=https://npm.mirror.example/\n")
    urls = registry_urls({"WEMCP_DEPLOYER_PIP_INDEX_URL": "https://deployer.example/simple",
                          "PIP_EXTRA_INDEX_URL": "https://extra.example/simple"}, tmp_path)
    assert urls["pypi"][:2] == ["https://deployer.example/simple", "https://extra.example/simple"]
    assert urls["npm"] == ["https://npm.mirror.example/"]
    assert urls["npm:@corp"] == ["https://npm.corp.example/"]
    assert "npm.corp.example" in registry_hosts({}, tmp_path)
    bare = registry_urls({}, tmp_path / "nothing")
    assert bare["npm"] == ["https://registry.npmjs.org/"] and bare["pypi"]


@asynccontextmanager
async def loopback_server() -> AsyncIterator[tuple[int, list[str]]]:
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.decode())
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()


async def test_httpx_client_checks_at_connect_time_rebinding_refused(monkeypatch):
    """The name answers a public address first (an up-front check passes) and the loopback next:
    the connection is refused, the loopback server sees nothing."""
    async with loopback_server() as (port, seen):
        fake = answers(["93.184.215.14"], ["127.0.0.1"])
        monkeypatch.setattr(netpolicy, "resolve", fake)
        p = EgressPolicy(registries=False)
        await p.check(f"http://rebind.example:{port}/")  # deploy/submission-time check: passes
        async with p.client() as c:
            with pytest.raises(httpx2.ConnectError) as e:
                await c.get(f"http://rebind.example:{port}/")
        assert refusal_in(e.value) is not None and refusal_in(e.value).reason == "loopback"
        assert fake.calls == ["rebind.example", "rebind.example"] and seen == []

        # allowed: it connects to the checked address, with the name in Host
        p.add("127.0.0.1")
        async with p.client() as c:
            r = await c.get(f"http://rebind.example:{port}/x")
        assert r.text == "ok" and f"host: rebind.example:{port}" in seen[0].lower()


async def test_create_connection_checks_and_connects_to_the_checked_address(monkeypatch):
    async with loopback_server() as (port, _seen):
        monkeypatch.setattr(netpolicy, "resolve", answers(["127.0.0.1"]))
        p = EgressPolicy(registries=False)
        loop = asyncio.get_running_loop()
        with pytest.raises(EgressRefused):
            await p.create_connection(loop, asyncio.Protocol, "rebind.example", port)
        p.add("127.0.0.0/8")
        transport, _ = await p.create_connection(loop, asyncio.Protocol, "rebind.example", port)
        assert transport.get_extra_info("peername")[0] == "127.0.0.1"
        transport.close()


@pytest.mark.parametrize("name", ["X-WeMcp-User-Role", "x-wemcp-env-api_key", "X-WeMcp-Assertion", "Connection",
                                  "Transfer-Encoding", "Host", "Content-Length", "Upgrade", "Mcp-Session-Id",
                                  "Proxy-Authorization", "X-Forwarded-For"])
def test_reserved_header_names(name):
    assert reserved_header(name) is not None


def test_key_headers_stay_allowed():
    for name in ("Authorization", "X-API-Key", "Cookie", "X-Goog-Api-Key"):
        assert reserved_header(name) is None
    assert outbound([("X-WeMcp-User-Role", "admin"), ("Authorization", "Bearer k")]) == [("Authorization", "Bearer k")]


@pytest.mark.parametrize("host,expected", [
    ("10.0.0.1", "10.0.0.1"), ("[::1]", "::1"), ("fe80::1%eth0", "fe80::1"), ("169.254.169.254", "169.254.169.254"),
    ("example.com", None), ("", None), ("1.2.3", None),
])
def test_literal(host, expected):
    got = netpolicy.literal(host)
    assert (str(got) if got is not None else None) == expected
