"""Unit tests of wemcp.agents.providers.ProviderClient.stream's reading of a provider's SSE stream
(on the shared parser, wemcp.common.sse): a real HTTP provider stand-in on loopback sends the bytes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from wemcp.agents import providers
from wemcp.agents.config import Settings
from wemcp.agents.errors import BadGateway
from wemcp.agents.providers import ProviderClient, ResolvedModel
from wemcp.devstack.testing import serve_app

CHUNK = {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
LAST = {"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": {"total_tokens": 3}}


def data(obj: Any) -> bytes:
    return json.dumps(obj).encode()


async def chunks_of(pieces: list[bytes]) -> list[dict[str, Any]]:
    """What stream() yields when the provider sends ``pieces`` as the body's chunks."""

    async def chat(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for p in pieces:
                yield p

        return StreamingResponse(body(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    async with serve_app(app) as url:
        client = ProviderClient(Settings())
        try:
            model = ResolvedModel(provider="stand-in", base_url=url + "/v1", model="m", api_key=None)
            return [c async for c in client.stream(model, {"messages": [{"role": "user", "content": "x"}]})]
        finally:
            await client.aclose()


async def test_chunks_until_done_whatever_the_line_ends_and_cuts() -> None:
    wire = (b": keep-alive\r\n\r\ndata: " + data(CHUNK) + b"\r\n\r\nevent: x\ndata:" + data(LAST) + b"\n\n"
            b"data: [DONE]\n\ndata: " + data(CHUNK) + b"\n\n")
    assert await chunks_of([wire]) == [CHUNK, LAST]
    assert await chunks_of([wire[i:i + 5] for i in range(0, len(wire), 5)]) == [CHUNK, LAST]


async def test_a_chunk_over_several_data_lines_is_joined() -> None:
    text = json.dumps(CHUNK, indent=1).encode()
    wire = b"".join(b"data: " + line + b"\n" for line in text.split(b"\n")) + b"\n"
    assert await chunks_of([wire]) == [CHUNK]


async def test_a_last_chunk_without_its_blank_line_counts() -> None:
    assert await chunks_of([b"data: " + data(CHUNK) + b"\n\ndata: " + data(LAST)]) == [CHUNK, LAST]


async def test_a_malformed_chunk_and_an_error_event_are_bad_gateway() -> None:
    with pytest.raises(BadGateway) as err:
        await chunks_of([b"data: " + data(CHUNK) + b"\n\ndata: {not json\n\n"])
    assert err.value.extra["code"] == "provider_malformed" and "malformed stream chunk" in err.value.detail
    with pytest.raises(BadGateway) as err:
        await chunks_of([b"data: " + data({"error": {"message": "overloaded"}}) + b"\n\n"])
    assert err.value.extra["code"] == "provider_error" and "overloaded" in err.value.detail


async def test_an_event_over_the_bound_is_bad_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(providers, "MAX_STREAM_EVENT", 1024)
    with pytest.raises(BadGateway) as err:
        await chunks_of([b"data: " + data(CHUNK) + b"\n\ndata: " + b"x" * 600, b"y" * 600])
    assert err.value.extra["code"] == "provider_malformed" and "over 16 MiB" in err.value.detail
