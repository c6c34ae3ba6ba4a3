"""The one request-body limit: a declared ``Content-Length`` over the limit is refused at once, a
body without one (chunked) is counted as it arrives and cut off at the limit, and what the client is
still sending of a refused body is read and dropped (bounded in bytes and time), because a server that
closes while the client is still sending resets the connection and the client never reads the 413.

Three forms of the same rule, for the three places a body is read:

- :func:`read_body`: the ASGI-level form (the gateway's MCP hot path reads the whole body itself);
- :class:`BodyLimitMiddleware`: before FastAPI reads a body (the catalog's uploads and JSON);
- :func:`limited_stream`: a body streamed on to another service (the gateway's proxy).

Each raises (or answers with) :class:`BodyTooLarge`; how the 413 is rendered stays with the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

DRAIN_CAP = 64 * 1024 * 1024  # an oversized body is read and dropped up to this, so the client sees the 413
BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class BodyTooLarge(StarletteHTTPException):
    """The body is over the limit. An ``HTTPException``, so FastAPI's body reader re-raises it as is
    (any other error there becomes a generic 400) and the shared handler renders it as problem+json."""

    def __init__(self, detail: str = "the request body is larger than the limit") -> None:
        super().__init__(413, detail)


class Disconnected(Exception):
    """The client went away before its body was complete."""


class InvalidContentLength(ValueError):
    pass


def declared_length(scope: dict[str, Any]) -> int | None:
    """The ``Content-Length`` a request declares (None without one); :class:`InvalidContentLength`
    when it is not a non-negative integer."""
    for k, v in scope.get("headers", ()):
        if k == b"content-length":
            text = v.decode("latin-1").strip()
            if not text.isdigit():
                raise InvalidContentLength(text[:40])
            return int(text)
    return None


async def drain(receive: Any, budget: int, timeout: float) -> None:  # noqa: ASYNC109 (a per-read bound)
    """Read and drop the rest of a refused body, at most ``budget`` bytes and ``timeout`` seconds."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while budget > 0:
                msg = await receive()
                if msg["type"] == "http.disconnect" or not msg.get("more_body"):
                    return
                budget -= len(msg.get("body", b""))


async def read_body(scope: dict[str, Any], receive: Any, limit: int, timeout: float) -> bytes:  # noqa: ASYNC109
    """The whole body, at most ``limit`` bytes, within ``timeout`` seconds (a client trickling bytes,
    slow loris, gets ``TimeoutError``). Raises :class:`BodyTooLarge` (after draining what it can) or
    :class:`Disconnected`."""
    try:
        declared = declared_length(scope)
    except InvalidContentLength:
        declared = None  # the server's HTTP parser rejects these; count what arrives
    if declared is not None and declared > limit:
        if declared <= DRAIN_CAP:
            await drain(receive, DRAIN_CAP, timeout)
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async with asyncio.timeout(timeout):
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise Disconnected
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                if msg.get("more_body"):
                    await drain(receive, DRAIN_CAP - size, timeout)
                raise BodyTooLarge
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def limited_receive(receive: Any, limit: int) -> Callable[[], Any]:
    """``receive`` that raises :class:`BodyTooLarge` once more than ``limit`` body bytes came in."""
    seen = 0

    async def limited() -> dict[str, Any]:
        nonlocal seen
        msg = await receive()
        if msg["type"] == "http.request":
            seen += len(msg.get("body", b""))
            if seen > limit:
                raise BodyTooLarge
        return msg

    return limited


async def limited_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request's body as it streams, raising :class:`BodyTooLarge` past ``limit`` bytes."""
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge
        yield chunk


def too_large(limit: int, detail: str | None = None) -> bytes:
    """The problem+json body of a 413."""
    return json.dumps({"type": "about:blank", "title": "Payload Too Large", "status": 413,
                       "detail": detail or f"the request body is larger than {limit} bytes"}).encode()


async def _send_too_large(send: Any, limit: int, detail: str | None = None) -> None:
    body = too_large(limit, detail)
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """ASGI middleware: ``limit_for(method, path)`` is the limit of a request (None: no limit)."""

    def __init__(self, app: Any, limit_for: Callable[[str, str], int | None], *, drain_timeout: float = 10.0) -> None:
        self.app = app
        self.limit_for = limit_for
        self.drain_timeout = drain_timeout

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in BODYLESS_METHODS:
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("method", ""), scope.get("path", ""))
        if limit is None:
            await self.app(scope, receive, send)
            return
        try:
            declared = declared_length(scope)
        except InvalidContentLength:
            await _send_too_large(send, limit, "invalid Content-Length")
            return
        if declared is not None and declared > limit:
            await drain(receive, limit + 1, self.drain_timeout)
            await _send_too_large(send, limit)
            return
        started = False

        async def tracking_send(msg: dict[str, Any]) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive(receive, limit), tracking_send)
        except BodyTooLarge:
            if not started:
                await _send_too_large(send, limit)
