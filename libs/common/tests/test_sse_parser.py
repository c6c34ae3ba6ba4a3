"""The shared SSE parser (WHATWG event stream interpretation) and encoder: every stream is also fed
cut at every byte (two chunks), and one byte at a time, and must give the same events."""

from __future__ import annotations

import asyncio

import pytest

from wemcp.common.sse import SseEvent, SseParser, SseTooLarge, aiter_events, encode, parse


def ev(data: bytes, event: str = "message", id: str = "") -> SseEvent:
    return SseEvent(data, event, id)


# (stream, the events, last_id after, retry after)
CASES: list[tuple[bytes, list[SseEvent], str | None, int | None]] = [
    (b"data: hello\n\n", [ev(b"hello")], None, None),
    (b"data:hello\n\n", [ev(b"hello")], None, None),  # the space is optional
    (b"data:  two spaces\n\n", [ev(b" two spaces")], None, None),  # only one space is stripped
    (b"data: \t tab\n\n", [ev(b"\t tab")], None, None),  # only a space, and only one
    (b"data: a\ndata: b\ndata:\n\n", [ev(b"a\nb\n")], None, None),  # lines joined by LF, an empty one too
    (b"data\n\n", [ev(b"")], None, None),  # a field without a colon: an empty value; data "" + LF -> ""
    (b"data: x\r\n\r\n", [ev(b"x")], None, None),  # CRLF
    (b"data: x\r\rdata: y\r\r", [ev(b"x"), ev(b"y")], None, None),  # CR
    (b"data: a\r\ndata: b\rdata: c\n\n", [ev(b"a\nb\nc")], None, None),  # mixed line ends
    (b"\xef\xbb\xbfdata: bom\n\n", [ev(b"bom")], None, None),  # a BOM at the start is dropped
    (b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n", [], None, None),  # only one: the next is part of a field name
    (b": comment\n: ping\n\ndata: after\n\n", [ev(b"after")], None, None),  # comments, blank lines
    (b":data: no\n\n", [], None, None),
    (b"event: endpoint\ndata: /messages?x=1\n\ndata: m\n\n", [ev(b"/messages?x=1", "endpoint"), ev(b"m")],
     None, None),  # the event type applies to one event only
    (b"event: e\n\ndata: m\n\n", [ev(b"m")], None, None),  # an event without data is dropped, type reset too
    (b"id: 1\ndata: a\n\ndata: b\n\n", [ev(b"a", id="1"), ev(b"b", id="1")], "1", None),  # ids persist
    (b"id: 1\ndata: a\n\nid\ndata: b\n\n", [ev(b"a", id="1"), ev(b"b")], "", None),  # an empty id resets it
    (b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n", [ev(b"a", id="1"), ev(b"b", id="1")], "1", None),  # NUL: ignored
    (b"id: prime\n\n", [], "prime", None),  # a priming event: no dispatch, but the id moves
    (b"id:  x \ndata: a\n\n", [ev(b"a", id=" x ")], " x ", None),  # one space stripped, no more
    (b"retry: 1500\n\n", [], None, 1500),
    (b"retry: 1500\nretry: 15x\nretry: -1\nretry:\nretry: 2 \n\n", [], None, 1500),  # digits only
    (b"retry: 3000\nid: 7\nevent: message\ndata: {\"jsonrpc\":\"2.0\"}\n\n",
     [ev(b'{"jsonrpc":"2.0"}', id="7")], "7", 3000),
    (b"foo: bar\ndata: a\nDATA: b\n\n", [ev(b"a")], None, None),  # unknown fields, names case-sensitive
    (b"data: a:b: c\n\n", [ev(b"a:b: c")], None, None),  # only the first colon separates
    (b"data: \xc3\xa9t\xc3\xa9\n\n", [ev("été".encode())], None, None),  # data stays bytes
    (b"event: caf\xc3\xa9\ndata: x\n\n", [ev(b"x", "café")], None, None),
    (b"data: unfinished\n", [], None, None),  # the end of the stream discards an unfinished event
    (b"data: unfinished", [], None, None),
    (b"", [], None, None),
    (b"\xef\xbb", [], None, None),
]


def feed_all(chunks: list[bytes], *, dispatch_incomplete: bool = False) -> tuple[list[SseEvent], SseParser]:
    parser = SseParser()
    out: list[SseEvent] = []
    for c in chunks:
        out += parser.feed(c)
    out += parser.close(dispatch_incomplete=dispatch_incomplete)
    return out, parser


@pytest.mark.parametrize("stream,events,last_id,retry", CASES)
def test_whole_stream(stream: bytes, events: list[SseEvent], last_id: str | None, retry: int | None) -> None:
    got, parser = feed_all([stream])
    assert got == events
    assert (parser.last_id, parser.retry) == (last_id, retry)
    assert parse(stream) == events


@pytest.mark.parametrize("stream,events,last_id,retry", CASES)
def test_cut_at_every_byte(stream: bytes, events: list[SseEvent], last_id: str | None, retry: int | None) -> None:
    for cut in range(len(stream) + 1):
        got, parser = feed_all([stream[:cut], stream[cut:]])
        assert got == events, f"cut at {cut}"
        assert (parser.last_id, parser.retry) == (last_id, retry), f"cut at {cut}"
    got, parser = feed_all([stream[i:i + 1] for i in range(len(stream))])  # one byte at a time
    assert got == events
    assert (parser.last_id, parser.retry) == (last_id, retry)


def test_events_come_as_soon_as_complete() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\n") == []
    assert parser.feed(b"\ndata: b\n") == [ev(b"a")]
    assert parser.feed(b"\r") == [ev(b"b")]  # a CR alone is a line end: here the blank line
    assert parser.feed(b"\n") == []  # the LF after that CR belongs to the same line end: no second blank line
    assert parser.feed(b"data: c\n") == []
    assert parser.feed(b"\n") == [ev(b"c")]


def test_cr_then_lf_across_chunks_is_one_line_end() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\n\n") == [ev(b"a\nb")]


@pytest.mark.parametrize("stream,events", [
    (b"data: unfinished\n", [ev(b"unfinished")]),
    (b"data: unfinished", [ev(b"unfinished")]),
    (b"data: a\n\ndata: b", [ev(b"a"), ev(b"b")]),
    (b"id: 3\ndata: x\r", [ev(b"x", id="3")]),
    (b"data: a\n\n", [ev(b"a")]),
    (b": only a comment", []),
])
def test_dispatch_incomplete_at_the_end(stream: bytes, events: list[SseEvent]) -> None:
    """What the gateway asks for: an upstream that ends its body without the final blank line."""
    for cut in range(len(stream) + 1):
        got, _ = feed_all([stream[:cut], stream[cut:]], dispatch_incomplete=True)
        assert got == events, f"cut at {cut}"
    assert parse(stream, dispatch_incomplete=True) == events


def test_max_bytes_bounds_a_line_and_an_event() -> None:
    parser = SseParser(max_bytes=100)
    assert parser.feed(b"data: " + b"x" * 90 + b"\n\n") == [ev(b"x" * 90)]  # under: fine
    with pytest.raises(SseTooLarge):
        for _ in range(20):  # one line that never ends, in small pieces
            parser.feed(b"y" * 10)
    parser = SseParser(max_bytes=100)
    with pytest.raises(SseTooLarge):  # many short data lines of one event
        parser.feed(b"data: 0123456789\n" * 20)
    parser = SseParser(max_bytes=100)
    for _ in range(50):  # many small events: each is bounded on its own
        assert parser.feed(b"data: 0123456789\n\n") == [ev(b"0123456789")]


def test_aiter_events_reads_chunks_and_keeps_state() -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for c in (b"retry: 500\nid: 4", b"2\ndata: {", b"}\n", b"\n: ping\n\ndata: tail"):
            yield c

    async def run(dispatch: bool) -> tuple[list[SseEvent], SseParser]:
        parser = SseParser()
        return [e async for e in aiter_events(chunks(), parser, dispatch_incomplete=dispatch)], parser

    got, parser = asyncio.run(run(False))
    assert got == [ev(b"{}", id="42")]
    assert (parser.last_id, parser.retry) == ("42", 500)
    got, _ = asyncio.run(run(True))
    assert got == [ev(b"{}", id="42"), ev(b"tail", id="42")]


@pytest.mark.parametrize("kwargs,wire", [
    ({"data": b'{"a":1}'}, b'event: message\ndata: {"a":1}\n\n'),
    ({"data": b"x", "event": None}, b"data: x\n\n"),
    ({"data": b"/m?s=1", "event": "endpoint"}, b"event: endpoint\ndata: /m?s=1\n\n"),
    ({"data": b"", "event": None, "id": "9", "retry": 500}, b"id: 9\nretry: 500\ndata: \n\n"),
    ({"data": b"a\nb\r\nc\rd", "event": None}, b"data: a\ndata: b\ndata: c\ndata: d\n\n"),
])
def test_encode(kwargs: dict, wire: bytes) -> None:
    assert encode(**kwargs) == wire
    parser = SseParser()
    events = parser.feed(wire)
    data = kwargs["data"].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if data:
        assert events == [SseEvent(data, kwargs.get("event") or "message", kwargs.get("id") or "")]
    assert parser.last_id == kwargs.get("id")


def test_encode_refuses_line_ends_in_fields() -> None:
    with pytest.raises(ValueError):
        encode(b"x", event="a\nb")
    with pytest.raises(ValueError):
        encode(b"x", id="1\r")


def test_after_close_a_reconnection_keeps_last_id_and_retry() -> None:
    parser = SseParser()
    assert parser.feed(b"retry: 700\nid: 5\ndata: a\n\ndata: cut") == [ev(b"a", id="5")]
    assert parser.close() == []  # the unfinished event is gone with its stream
    assert parser.feed(b"\xef\xbb\xbfdata: b\n\n") == [ev(b"b", id="5")]  # a new stream: its BOM too
    assert (parser.last_id, parser.retry) == ("5", 700)
