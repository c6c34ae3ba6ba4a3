"""Domain proofs for the naming rules (names.py): the claim's token ``wemcp-verify=<token>`` in a DNS
TXT record of the domain (a small RFC 1035 client: UDP with EDNS0, TCP when the answer is
truncated, the resolvers ``WEMCP_CATALOG_DNS_NAMESERVERS`` or /etc/resolv.conf) or as a line of the
HTTP well-known file (``WEMCP_CATALOG_DOMAIN_PROOF_URL``, fetched through the egress policy)."""

from __future__ import annotations

import asyncio
import secrets
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx2 as httpx

from wemcp.catalog.config import Settings
from wemcp.catalog.models import DomainClaim
from wemcp.common.errors import ServiceUnavailable
from wemcp.common.netpolicy import refusal_in

PROOF_PREFIX = "wemcp-verify="


def nameservers(settings: Settings) -> list[tuple[str, int]]:
    raw = [s.strip() for s in settings.dns_nameservers.split(",") if s.strip()]
    if not raw:
        try:
            raw = [line.split()[1] for line in Path("/etc/resolv.conf").read_text().splitlines()
                   if line.startswith("nameserver") and len(line.split()) > 1]
        except OSError:
            raw = []
    out = []
    for s in raw:
        host, _, port = s.rpartition(":") if s.count(":") == 1 else (s, "", "")
        out.append((host or s, int(port) if port else 53))
    return out or [("127.0.0.1", 53)]


def _dns_query(qid: int, domain: str) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode("ascii") for p in domain.split(".")) + b"\x00"
    # one question (TXT, IN), recursion desired, and an EDNS0 OPT record offering 4096-byte answers
    return (struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1) + qname + struct.pack("!HH", 16, 1)
            + b"\x00" + struct.pack("!HHIH", 41, 4096, 0, 0))


def _skip_name(msg: bytes, off: int) -> int:
    while True:
        if off >= len(msg):
            raise ValueError("truncated name")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            return off + 2
        if n == 0:
            return off + 1
        off += 1 + n


def parse_txt_answer(msg: bytes, qid: int) -> tuple[list[str], bool]:
    """(TXT strings of the answer, truncated flag). Each record's character-strings are joined, as
    RFC 7208 reads long records."""
    if len(msg) < 12:
        raise ValueError("short DNS message")
    rid, flags, qd, an, _, _ = struct.unpack("!HHHHHH", msg[:12])
    if rid != qid or not flags & 0x8000:
        raise ValueError("not the answer to our query")
    if flags & 0x0200:
        return [], True
    rcode = flags & 0x000F
    if rcode == 3:  # NXDOMAIN
        return [], False
    if rcode != 0:
        raise ValueError(f"DNS error rcode {rcode}")
    off = 12
    for _ in range(qd):
        off = _skip_name(msg, off) + 4
    out = []
    for _ in range(an):
        off = _skip_name(msg, off)
        rtype, _, _, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        rdata = msg[off:off + rdlen]
        off += rdlen
        if rtype != 16:
            continue
        parts, i = [], 0
        while i < len(rdata):
            n = rdata[i]
            parts.append(rdata[i + 1:i + 1 + n])
            i += 1 + n
        out.append(b"".join(parts).decode("utf-8", "replace"))
    return out, False


class _Answer(asyncio.DatagramProtocol):
    """Takes the first datagram that answers query ``qid`` (others are ignored)."""

    def __init__(self, answer: asyncio.Future[bytes], qid: int) -> None:
        self.answer, self.qid = answer, qid

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.answer.done() and len(data) >= 2 and struct.unpack("!H", data[:2])[0] == self.qid:
            self.answer.set_result(data)


async def txt_records(domain: str, servers: Iterable[tuple[str, int]], timeout: float) -> list[str]:  # noqa: ASYNC109
    """TXT records of ``domain`` from the configured resolvers (UDP, TCP when the answer is
    truncated); the first resolver that answers wins."""
    loop = asyncio.get_running_loop()
    last: Exception | None = None
    for host, port in servers:
        qid = secrets.randbits(16)
        query = _dns_query(qid, domain)
        try:
            answer: asyncio.Future[bytes] = loop.create_future()
            transport, _ = await loop.create_datagram_endpoint(lambda a=answer, q=qid: _Answer(a, q),  # type: ignore[misc]
                                                               remote_addr=(host, port))
            try:
                transport.sendto(query)
                msg = await asyncio.wait_for(answer, timeout)
            finally:
                transport.close()
            records, truncated = parse_txt_answer(msg, qid)
            if truncated:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
                try:
                    writer.write(struct.pack("!H", len(query)) + query)
                    await writer.drain()
                    size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), timeout))[0]
                    records, _ = parse_txt_answer(await asyncio.wait_for(reader.readexactly(size), timeout), qid)
                finally:
                    writer.close()
            return records
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
            last = exc
    raise ServiceUnavailable(f"no DNS resolver answered for {domain} ({type(last).__name__}); try again",
                             headers={"Retry-After": "30"})


async def http_proof(settings: Settings, domain: str) -> tuple[bool, str]:
    """Whether the HTTP well-known file of ``domain`` holds a line; (found text, URL asked)."""
    url = settings.domain_proof_url.format(domain=domain)
    try:
        async with settings.egress.client(timeout=settings.names_timeout_seconds) as c:
            async with c.stream("GET", url, headers={"Accept": "text/plain"}) as r:
                if r.status_code != 200:
                    return False, f"{url} answered HTTP {r.status_code}"
                buf = bytearray()
                async for chunk in r.aiter_bytes():
                    buf += chunk
                    if len(buf) > 64 * 1024:
                        return False, f"{url} is larger than 64 KiB"
    except httpx.HTTPError as exc:
        refused = refusal_in(exc)
        return False, f"{url}: " + (str(refused) if refused else f"cannot fetch it ({type(exc).__name__})")
    return True, buf.decode("utf-8", "replace")


async def verify_claim(settings: Settings, claim: DomainClaim, method: str) -> tuple[bool, str]:
    """Look for ``wemcp-verify=<token>``: a TXT record of the domain, or a line of the well-known
    file. (found, what was looked at)."""
    want = PROOF_PREFIX + claim.token
    if method == "dns":
        records = await txt_records(claim.domain, nameservers(settings), settings.names_timeout_seconds)
        return any(r.strip() == want for r in records), f"TXT records of {claim.domain}: {len(records)} found"
    ok, text = await http_proof(settings, claim.domain)
    if not ok:
        return False, text
    return any(line.strip() == want for line in text.splitlines()), settings.domain_proof_url.format(
        domain=claim.domain)
