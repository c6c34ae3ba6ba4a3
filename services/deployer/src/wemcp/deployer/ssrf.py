"""Refusing remote URLs that point into the platform's own network (SSRF)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class UnsafeUrl(ValueError):
    pass


def _allowed(host: str, addr: ipaddress.IPv4Address | ipaddress.IPv6Address, allow: list[str]) -> bool:
    for entry in allow:
        if entry.lower() == host.lower():
            return True
        try:
            if addr in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


async def check_url(url: str, allow: list[str] | None = None) -> list[str]:
    """Return the addresses ``url`` resolves to, or raise :class:`UnsafeUrl` with a reason."""
    allow = allow or []
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl(f"remote URL must be http or https, not {parts.scheme or 'none'!r}")
    if parts.username or parts.password:
        raise UnsafeUrl("remote URL must not carry credentials; declare them as headers")
    host = parts.hostname
    if not host:
        raise UnsafeUrl("remote URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeUrl("remote URL has an invalid port") from None
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise UnsafeUrl(f"the host {host!r} does not resolve; check the URL") from None
    addrs = sorted({str(info[4][0]) for info in infos})  # AF_INET/AF_INET6: the address is a str already
    for a in addrs:
        ip = ipaddress.ip_address(a.split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if not ip.is_global or ip.is_multicast:
            if not _allowed(host, ip, allow):
                raise UnsafeUrl(f"the host {host!r} resolves to a non-public address ({ip}); "
                                "remote servers must be reachable on the public internet")
    return addrs
