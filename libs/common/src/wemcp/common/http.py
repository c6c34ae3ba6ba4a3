"""HTTP glue shared by every service: problem+json errors, request ids, access logs."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from wemcp.common.errors import AppError
from wemcp.common.logging import get_logger, info_line

PROBLEM_JSON = "application/problem+json"
log = get_logger("wemcp.http")


def problem(status: int, title: str, detail: str, *, type_: str = "about:blank",
            instance: str | None = None, headers: dict[str, str] | None = None,
            **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        where = loc[0] if loc else "body"
        field = ".".join(loc[1:]) if where in {"body", "query", "path", "header"} else ".".join(loc)
        out.append({"field": field, "in": where, "message": err.get("msg", ""), "type": err.get("type", "")})
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, type_=exc.type_, instance=request.url.path,
                       headers=exc.headers or None, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        if any(e["type"] == "json_invalid" for e in errors):
            return problem(400, "Bad Request", "the request body is not valid JSON",
                           instance=request.url.path, errors=errors)
        detail = "; ".join(f"{e['field'] or e['in']}: {e['message']}" for e in errors[:5])
        return problem(422, "Unprocessable Content", detail, instance=request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not Found", 405: "Method Not Allowed", 401: "Unauthorized", 403: "Forbidden"}.get(
            exc.status_code, "Error")
        return problem(exc.status_code, title, str(exc.detail), instance=request.url.path,
                       headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path, method=request.method)
        return problem(500, "Internal Server Error", "an unexpected error occurred; it has been logged",
                       instance=request.url.path)


class RequestContextMiddleware:
    """Pure ASGI: a request id on every request and response, and one access log line."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for k, v in scope.get("headers", []):
            if k == b"x-request-id":
                request_id = v.decode("latin-1")[:100]
                break
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = {"code": 500}
        start = time.perf_counter()

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope.get("path", "")
            if path not in ("/healthz", "/readyz"):
                ms = round((time.perf_counter() - start) * 1000, 2)
                fields = {"method": scope.get("method"), "path": path, "status": status["code"], "ms": ms,
                          "request_id": request_id}
                if status["code"] >= 500:
                    log.warning("http_request", **fields)
                else:
                    info_line("http_request", fields, log, "wemcp.http")


class _CoalescingTransport:
    """A transport that holds a write until the next one in the same loop iteration, or the end of
    that iteration, whichever comes first, and then sends both in one write. uvicorn writes a
    response's status line and headers, then its body, as two ``transport.write`` calls: two
    ``send`` system calls per reply, and on loopback each one carries the kernel's delivery to the
    receiver, a large share of a proxy's CPU per call. Everything else is the real transport's."""

    __slots__ = ("_held", "_loop", "_t")

    def __init__(self, transport: Any, loop: Any) -> None:
        self._t = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            if not data:
                return
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
        else:
            self._held = None
            self._t.write(held + data)

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._t.is_closing():
                self._t.write(held)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def write_eof(self) -> None:
        self._flush()
        self._t.write_eof()

    def close(self) -> None:
        self._flush()
        self._t.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._t, name)


# How long a server of the platform (every service, the deployer's bridge) keeps an idle HTTP
# connection open: longer than any platform client keeps one idle (the gateway's clients: 60 s), so
# the client always closes first. With uvicorn's default (5 s) a server closed connections a client
# still pooled, and a request sent as the close arrived failed (a 503 to the user).
SERVER_KEEP_ALIVE_SECONDS = 75


def http_protocol() -> Any:
    """uvicorn's httptools protocol with coalesced response writes (see :class:`_CoalescingTransport`),
    for ``uvicorn.Config(http=...)``; ``"auto"`` when httptools is not installed."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "auto"

    class CoalescingHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.transport = _CoalescingTransport(transport, self.loop)  # type: ignore[assignment]

        def send_400_response(self, msg: str) -> None:
            # A request the HTTP parser refuses (a raw non-ASCII byte in the path, a malformed
            # request line) gets the platform's problem+json like every other 400, not text/plain.
            body = orjson.dumps({"type": "about:blank", "title": "Bad Request", "status": 400,
                                 "detail": "the request is not valid HTTP (the request line or headers "
                                           "hold bytes that must be percent-encoded)"})
            head = [b"HTTP/1.1 400 Bad Request\r\n"]
            head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
            head.append(b"content-type: " + PROBLEM_JSON.encode() + b"\r\n"
                        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n")
            self.transport.write(b"".join(head) + body)
            self.transport.close()

    return CoalescingHttpToolsProtocol
