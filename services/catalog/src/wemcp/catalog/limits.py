"""Body size limits enforced before FastAPI reads a body: a declared Content-Length over the limit
is refused at once, and a chunked body is counted as it streams and cut off at the limit."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException


class BodyLimitMiddleware:
    def __init__(self, app: Any, limit_for: Callable[[str, str], int | None]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in {"GET", "HEAD", "OPTIONS", "DELETE"}:
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("method", ""), scope.get("path", ""))
        if limit is None:
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    await _too_large(send, limit, "invalid Content-Length")
                    return
                if declared > limit:
                    await _drain(receive, limit)
                    await _too_large(send, limit)
                    return
        seen = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge()
            return msg

        async def tracking_send(msg: dict[str, Any]) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _too_large(send, limit)


class _BodyTooLarge(StarletteHTTPException):
    # An HTTPException, so FastAPI's body reader re-raises it as is (any other error there
    # becomes a generic 400) and the shared handler renders it as problem+json.
    def __init__(self) -> None:
        super().__init__(413, "the request body is larger than the limit")


async def _drain(receive: Any, limit: int) -> None:
    # Read a little of what the client is sending so it sees our answer instead of a reset.
    got = 0
    while got <= limit:
        msg = await receive()
        if msg["type"] != "http.request":
            return
        got += len(msg.get("body", b""))
        if not msg.get("more_body"):
            return


async def _too_large(send: Any, limit: int, detail: str | None = None) -> None:
    body = json.dumps({"type": "about:blank", "title": "Payload Too Large", "status": 413,
                       "detail": detail or f"the request body is larger than {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
