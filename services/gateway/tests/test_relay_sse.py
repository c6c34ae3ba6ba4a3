"""Unit tests of wemcp.gateway.relay.iter_sse: the JSON-RPC messages of an upstream's SSE response
as its bytes arrive, cut anywhere (the shared parser, wemcp.common.sse, underneath)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from wemcp.common.sse import SseParser
from wemcp.gateway.relay import iter_sse
from wemcp.gateway.upstream import UpstreamError

REPLY = {"jsonrpc": "2.0", "id": 1, "result": {"ok": True}}
NOTE = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}


class Body:
    """What iter_sse reads of a response: ``content.iter_any()``, the body's chunks as they come."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.content = self

    async def iter_any(self) -> AsyncIterator[bytes]:
        for c in self.chunks:
            yield c


async def messages(chunks: list[bytes], parser: SseParser | None = None) -> list[dict[str, Any]]:
    return [m async for m in iter_sse(Body(chunks), parser)]


def cut(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


STREAM = (b": ping\r\n\r\nid: a1\r\ndata: " + orjson.dumps(NOTE) + b"\r\n\r\n"
          b"event: message\ndata:" + orjson.dumps(REPLY) + b"\n\n")


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
async def test_messages_come_out_whole_however_the_bytes_are_cut(size: int) -> None:
    assert await messages(cut(STREAM, size)) == [NOTE, REPLY]


async def test_a_crlf_cut_between_chunks_is_one_line_end() -> None:
    body = b"data: " + orjson.dumps(REPLY) + b"\r"
    assert await messages([body, b"\n\r", b"\n"]) == [REPLY]


async def test_the_parser_keeps_the_last_event_id_and_retry_hint() -> None:
    parser = SseParser()
    body = b"retry: 1500\nid: e-9\ndata: " + orjson.dumps(NOTE) + b"\n\nid: e-10\n\n"
    assert await messages([body], parser) == [NOTE]
    assert (parser.last_id, parser.retry) == ("e-10", 1500)


async def test_pings_non_json_and_non_object_events_are_skipped() -> None:
    body = (b": keep-alive\n\ndata: ping\n\ndata: [1, 2]\n\ndata: \"text\"\n\n"
            b"data: " + orjson.dumps(REPLY) + b"\n\n")
    assert await messages([body]) == [REPLY]


async def test_a_last_event_without_its_blank_line_still_counts() -> None:
    assert await messages([b"data: " + orjson.dumps(REPLY)]) == [REPLY]


async def test_an_empty_stream_has_no_messages() -> None:
    assert await messages([]) == []
    assert await messages([b""]) == []


async def test_an_event_over_the_bound_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError) as err:
        await messages([b"data: " + b"x" * 2048 + b"\n\n"], SseParser(1024))
    assert err.value.code == -32002
    with pytest.raises(UpstreamError):  # a line that never ends is bounded too
        await messages(cut(b"data: " + b"y" * 4096, 100), SseParser(1024))
