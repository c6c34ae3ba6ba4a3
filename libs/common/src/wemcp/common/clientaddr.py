"""The client's address: one reading of it for the whole platform (the gateway's quota buckets of
anonymous callers, the ``X-Forwarded-For`` it states to services, which auth's sign-in throttle reads).

The socket's peer is the client — unless the peer is one of the configured proxies
(``trusted_proxies``, CIDRs). Then the forwarding header those proxies maintain (``X-Forwarded-For``,
or RFC 7239 ``Forwarded``: only the one they are configured to write, since the other is whatever the
client sent) is read from the right: each proxy appends the address it saw, so the rightmost entry
that is not itself a trusted proxy is the client; everything to its left came from the client and
can be forged. An entry that is not an address (``unknown``, an obfuscated ``_node``, garbage) ends
the walk at the last proxy. uvicorn's own proxy-header handling (which trusts loopback peers by
default) is off in every service (``proxy_headers=False``), so ``scope["client"]`` is the socket's.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

HEADERS = ("x-forwarded-for", "forwarded")


def parse_networks(cidrs: Iterable[str]) -> tuple[IPv4Network | IPv6Network, ...]:
    """``["10.0.0.0/8", "2001:db8::/32", "127.0.0.1"]``; raises ValueError naming a bad entry."""
    out = []
    for c in cidrs:
        try:
            out.append(ip_network(c.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an address or CIDR: {c!r}") from None
    return tuple(out)


def _address(text: str) -> IPv4Address | IPv6Address | None:
    """An address as forwarding headers write it: ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``,
    ``[2001:db8::1]:80``, optionally quoted; None for anything else."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        ip = ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def bucket(address: str) -> str:
    """What one client is counted as: the address, or its /64 for IPv6 (one subscriber's share;
    counting single IPv6 addresses would give each caller 2^64 buckets)."""
    ip = _address(address)
    if isinstance(ip, IPv6Address):
        return str(IPv6Network((ip, 64), strict=False))
    return str(ip) if ip is not None else (address or "unknown")


class ClientAddresses:
    def __init__(self, trusted_proxies: Iterable[str] = (), header: str = "x-forwarded-for") -> None:
        if header.lower() not in HEADERS:
            raise ValueError(f"the forwarding header is one of {HEADERS}, not {header!r}")
        self.trusted = parse_networks(trusted_proxies)
        self.header = header.lower().encode("latin-1")

    def _trusted(self, ip: IPv4Address | IPv6Address | None) -> bool:
        return ip is not None and any(ip in net for net in self.trusted)

    def _hops(self, scope: dict[str, Any]) -> list[IPv4Address | IPv6Address | None]:
        """The header's entries, left to right (several header lines read as one list)."""
        raw = ",".join(v.decode("latin-1") for k, v in scope.get("headers", ()) if k == self.header)
        if not raw:
            return []
        if self.header == b"x-forwarded-for":
            return [_address(part) for part in raw.split(",")]
        hops: list[IPv4Address | IPv6Address | None] = []
        for element in raw.split(","):  # Forwarded: for=…;proto=…, for=…
            found = None
            for pair in element.split(";"):
                name, _, value = pair.strip().partition("=")
                if name.lower() == "for":
                    found = _address(value)
            hops.append(found)
        return hops

    def of(self, scope: dict[str, Any]) -> str:
        """The client's address for an ASGI scope (``""`` when the server gave no peer)."""
        client = scope.get("client")
        peer = str(client[0]) if client else ""
        if not self.trusted or not self._trusted(_address(peer)):
            return peer
        address = peer
        for hop in reversed(self._hops(scope)):
            if hop is None:
                break  # not an address: the last proxy is as far as anyone can vouch
            address = str(hop)
            if not self._trusted(hop):
                break
        return address
