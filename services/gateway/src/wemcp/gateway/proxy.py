"""Reverse proxy from the gateway to the owning service over pooled keep-alive connections.

Bodies stream both ways (nothing is buffered whole); hop-by-hop headers are dropped; the trace
context and a request id travel on. A service that is down is a 503 problem, a slow one a 504.
"""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from wemcp.common.bodylimit import BodyTooLarge, limited_stream
from wemcp.common.errors import GatewayTimeout, PayloadTooLarge, ServiceUnavailable
from wemcp.common.identity import IDENTITY_HEADERS, Identity
from wemcp.common.logging import get_logger
from wemcp.common.telemetry import inject_headers
from wemcp.common.trust import HEADER_ASSERTION, Issuer
from wemcp.gateway.pathguard import upstream_target

log = get_logger("wemcp.gateway.proxy")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
})
# Headers the gateway's own server and middleware set on every response it sends (uvicorn: date,
# server; RequestContextMiddleware: x-request-id, the same id the service was given): the service's
# copies would make each appear twice.
OWN_RESPONSE_HEADERS = frozenset({"date", "server", "x-request-id"})
_NOT_PASSED_BACK = HOP_BY_HOP | OWN_RESPONSE_HEADERS


# idle connections to the services are kept below their keep-alive (wemcp.common.http.SERVER_KEEP_ALIVE_SECONDS)
KEEP_ALIVE_SECONDS = 60.0


def make_client(max_connections: int, timeout: float, connect_timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                            keepalive_expiry=KEEP_ALIVE_SECONDS),
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        follow_redirects=False,
    )


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
    # One statement of who the client is, read the platform's one way (wemcp.common.clientaddr: the
    # socket's peer, or what configured proxies forwarded); what the client claimed is not passed on.
    for claimed in ("forwarded", "x-real-ip"):
        headers.pop(claimed, None)
    headers["x-forwarded-for"] = request.app.state.runtime.settings.client_addresses.of(request.scope)
    headers["x-forwarded-proto"] = request.url.scheme
    headers["x-forwarded-host"] = request.headers.get("host", "")
    request_id = request.scope.get("state", {}).get("request_id")
    if request_id:
        headers["x-request-id"] = request_id
    headers.update(inject_headers())

    # The raw path as the client sent it, validated (pathguard): never the decoded path, which the
    # HTTP client would re-resolve (``..``) or refuse (control characters).
    url = base_url + upstream_target(request.scope)
    has_body = request.method not in ("GET", "HEAD", "OPTIONS", "DELETE") or bool(declared)
    upstream_request = client.build_request(
        request.method, url, headers=headers,
        content=limited_stream(request, max_body) if has_body else None,
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
                            for k, v in upstream.headers.multi_items() if k.lower() not in _NOT_PASSED_BACK]
    return response
