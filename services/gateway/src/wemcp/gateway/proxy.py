"""Reverse proxy from the gateway to the owning service over pooled keep-alive connections.

Bodies stream both ways (nothing is buffered whole); hop-by-hop headers are dropped; the trace
context and a request id travel on. A service that is down is a 503 problem, a slow one a 504.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from wemcp.common.errors import GatewayTimeout, PayloadTooLarge, ServiceUnavailable
from wemcp.common.identity import IDENTITY_HEADERS, Identity
from wemcp.common.logging import get_logger
from wemcp.common.telemetry import inject_headers
from wemcp.common.trust import HEADER_ASSERTION, Issuer

log = get_logger("wemcp.gateway.proxy")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
})


class BodyTooLarge(Exception):
    pass


def make_client(max_connections: int, timeout: float, connect_timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                            keepalive_expiry=60),
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        follow_redirects=False,
    )


async def _limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge
        yield chunk


async def forward(request: Request, client: httpx.AsyncClient, service: str, base_url: str,
                  max_body: int, identity: Identity | None = None) -> Response:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_body:
        raise PayloadTooLarge(f"the request body is larger than {max_body} bytes")

    # A client never speaks for itself: the identity goes only in the gateway's signed assertion
    # (cached per identity and service: a dict lookup per request).
    headers: dict[str, Any] = {k: v for k, v in request.headers.items()
                               if k.lower() not in HOP_BY_HOP and k.lower() not in IDENTITY_HEADERS}
    issuer: Issuer = request.app.state.runtime.issuer
    headers[HEADER_ASSERTION] = issuer.token(service, identity)
    client_host = request.client.host if request.client else ""
    prior = request.headers.get("x-forwarded-for")
    headers["x-forwarded-for"] = f"{prior}, {client_host}" if prior else client_host
    headers["x-forwarded-proto"] = request.url.scheme
    headers["x-forwarded-host"] = request.headers.get("host", "")
    request_id = request.scope.get("state", {}).get("request_id")
    if request_id:
        headers["x-request-id"] = request_id
    headers.update(inject_headers())

    url = base_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    has_body = request.method not in ("GET", "HEAD", "OPTIONS", "DELETE") or bool(declared)
    upstream_request = client.build_request(
        request.method, url, headers=headers,
        content=_limited(request, max_body) if has_body else None,
    )
    try:
        upstream = await client.send(upstream_request, stream=True)
    except BodyTooLarge:
        raise PayloadTooLarge(f"the request body is larger than {max_body} bytes") from None
    except httpx.TimeoutException:
        log.warning("upstream_timeout", service=service, path=request.url.path)
        raise GatewayTimeout(f"the {service} service did not answer in time") from None
    except httpx.TransportError as exc:
        log.warning("upstream_unavailable", service=service, path=request.url.path, error=str(exc)[:200])
        raise ServiceUnavailable(f"the {service} service is unavailable",
                                 headers={"Retry-After": "1"}) from None

    response = StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code,
                                 background=BackgroundTask(upstream.aclose))
    # Keep repeated headers (Set-Cookie) and the upstream's content-type exactly as sent.
    response.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                            for k, v in upstream.headers.multi_items() if k.lower() not in HOP_BY_HOP]
    return response
