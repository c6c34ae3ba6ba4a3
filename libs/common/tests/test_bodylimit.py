"""The one request-body limit (wemcp.common.bodylimit), in its three forms, on plain ASGI messages
and through a real FastAPI app."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2 as httpx
import pytest
from fastapi import FastAPI, Request

from wemcp.common.bodylimit import (
    BodyLimitMiddleware,
    BodyTooLarge,
    Disconnected,
    InvalidContentLength,
    declared_length,
    drain,
    limited_receive,
    limited_stream,
    read_body,
    too_large,
)


def _scope(length: str | None = None, method: str = "POST", path: str = "/x") -> dict[str, Any]:
    headers = [(b"content-length", length.encode())] if length is not None else []
    return {"type": "http", "method": method, "path": path, "headers": headers}


def _receive(*chunks: bytes, then_disconnect: bool = False):
    msgs = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    if then_disconnect:
        msgs[-1]["more_body"] = True
        msgs.append({"type": "http.disconnect"})
    read: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not msgs:
            await asyncio.sleep(3600)  # a client that sends nothing more
        read.append(msgs[0])
        return msgs.pop(0)

    receive.read = read  # type: ignore[attr-defined]
    return receive


@pytest.mark.parametrize("length,expected", [(None, None), ("0", 0), ("12", 12), (" 7 ", 7)])
def test_declared_length(length, expected):
    assert declared_length(_scope(length)) == expected


@pytest.mark.parametrize("length", ["-1", "1e3", "abc", ""])
def test_declared_length_refuses_nonsense(length):
    with pytest.raises(InvalidContentLength):
        declared_length(_scope(length))


async def test_read_body_joins_chunks_within_the_limit():
    assert await read_body(_scope(), _receive(b"ab", b"cd", b""), 4, 1.0) == b"abcd"
    assert await read_body(_scope("3"), _receive(b"abc"), 3, 1.0) == b"abc"


async def test_read_body_refuses_a_declared_length_over_the_limit_and_drains():
    receive = _receive(b"x" * 10, b"y" * 10)
    with pytest.raises(BodyTooLarge) as e:
        await read_body(_scope("20"), receive, 5, 1.0)
    assert e.value.status_code == 413
    assert len(receive.read) == 2  # the rest of the body was read, so the client sees the answer


async def test_read_body_cuts_a_chunked_body_at_the_limit():
    receive = _receive(b"x" * 4, b"x" * 4, b"x" * 4)
    with pytest.raises(BodyTooLarge):
        await read_body(_scope(), receive, 6, 1.0)
    assert len(receive.read) == 3


async def test_read_body_disconnect_and_slow_client():
    with pytest.raises(Disconnected):
        await read_body(_scope(), _receive(b"ab", then_disconnect=True), 10, 1.0)
    with pytest.raises(TimeoutError):
        await read_body(_scope(), _slow(), 10, 0.05)


def _slow():
    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {}
    return receive


async def test_drain_is_bounded_in_bytes_and_time():
    receive = _receive(*(b"x" * 10 for _ in range(10)))
    await drain(receive, 25, 1.0)
    assert len(receive.read) == 3  # stops once the budget is spent
    await drain(_slow(), 10, 0.05)  # returns after the timeout, without raising


async def test_limited_receive_and_stream():
    receive = limited_receive(_receive(b"abc", b"def"), 4)
    assert (await receive())["body"] == b"abc"
    with pytest.raises(BodyTooLarge):
        await receive()


def test_too_large_is_problem_json():
    body = json.loads(too_large(10))
    assert body["status"] == 413 and "10 bytes" in body["detail"]
    assert json.loads(too_large(10, "invalid Content-Length"))["detail"] == "invalid Content-Length"


@pytest.fixture
async def client():
    app = FastAPI()

    @app.post("/json")
    async def take_json(payload: dict[str, Any]) -> dict[str, int]:
        return {"keys": len(payload)}

    @app.post("/stream")
    async def take_stream(request: Request) -> dict[str, int]:
        return {"n": sum([len(c) async for c in limited_stream(request, 16)])}

    @app.post("/open")
    async def take_any(request: Request) -> dict[str, int]:
        return {"n": len(await request.body())}

    limited = BodyLimitMiddleware(app, lambda method, path: None if path in ("/open", "/stream") else 32)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=limited), base_url="http://t") as c:
        yield c


async def test_middleware_refuses_declared_and_streamed_bodies(client):
    assert (await client.post("/json", json={"a": 1})).json() == {"keys": 1}
    big = await client.post("/json", content=b"{" + b" " * 64 + b"}", headers={"content-type": "application/json"})
    assert big.status_code == 413 and big.headers["content-type"] == "application/problem+json"
    assert "32 bytes" in big.json()["detail"]

    async def chunks():
        for _ in range(8):
            yield b"        "

    streamed = await client.post("/json", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert (await client.post("/open", content=b"x" * 100)).json() == {"n": 100}  # no limit there
    assert (await client.get("/json")).status_code == 405  # bodyless methods pass untouched


async def test_limited_stream_through_an_app(client):
    assert (await client.post("/stream", content=b"x" * 16)).json() == {"n": 16}
    r = await client.post("/stream", content=b"x" * 17)
    assert r.status_code == 413
