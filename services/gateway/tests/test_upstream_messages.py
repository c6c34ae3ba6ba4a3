"""Unit tests of wemcp.gateway.upstream.parse_messages: the JSON-RPC messages of an upstream reply
read whole, a JSON body (one message or a batch) or an SSE body (on the shared parser,
wemcp.common.sse)."""

from __future__ import annotations

import orjson
import pytest

from wemcp.gateway.upstream import final_response, parse_messages

SSE = "text/event-stream"
JSON = "application/json"
REPLY = {"jsonrpc": "2.0", "id": 1, "result": {"ok": True}}
NOTE = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}


def test_a_json_body_is_one_message() -> None:
    assert parse_messages(orjson.dumps(REPLY), JSON) == [REPLY]
    assert parse_messages(orjson.dumps(REPLY), "application/json; charset=utf-8") == [REPLY]


def test_a_json_batch_is_its_messages() -> None:
    assert parse_messages(orjson.dumps([NOTE, REPLY]), JSON) == [NOTE, REPLY]


def test_an_empty_json_body_has_no_messages() -> None:
    assert parse_messages(b"", JSON) == []
    assert parse_messages(b" \r\n", JSON) == []


def test_a_malformed_json_body_raises() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        parse_messages(b'{"jsonrpc": ', JSON)


def test_sse_events_in_order_with_or_without_the_space_after_data() -> None:
    body = b"data: " + orjson.dumps(NOTE) + b"\n\ndata:" + orjson.dumps(REPLY) + b"\n\n"
    assert parse_messages(body, SSE) == [NOTE, REPLY]
    assert parse_messages(body, "text/event-stream; charset=utf-8") == [NOTE, REPLY]


def test_sse_line_ends_ids_comments_and_event_names() -> None:
    body = (b"\xef\xbb\xbf: keep-alive\r\n\r\nid: 7\r\nevent: message\r\nretry: 100\r\n"
            b"data: " + orjson.dumps(REPLY) + b"\r\n\r\n")
    assert parse_messages(body, SSE) == [REPLY]
    assert parse_messages(body.replace(b"\r\n", b"\r"), SSE) == [REPLY]


def test_a_message_split_over_data_lines_is_joined() -> None:
    body = b'data: {"jsonrpc": "2.0", "id": 1,\ndata:  "result": {"ok": true}}\n\n'
    assert parse_messages(body, SSE) == [REPLY]


def test_the_last_event_counts_without_its_blank_line() -> None:
    assert parse_messages(b"data: " + orjson.dumps(REPLY), SSE) == [REPLY]
    assert parse_messages(b"data: " + orjson.dumps(REPLY) + b"\n", SSE) == [REPLY]


def test_events_that_are_not_json_are_skipped_and_empty_events_are_none() -> None:
    body = b"data: not json\n\ndata: [DONE]\n\nid: 3\n\ndata:\n\n" + b"data: " + orjson.dumps(REPLY) + b"\n\n"
    assert parse_messages(body, SSE) == [REPLY]
    assert parse_messages(b"", SSE) == []
    assert parse_messages(b": only a comment\n\n", SSE) == []


def test_the_final_response_is_the_reply_to_the_request_id() -> None:
    other = {"jsonrpc": "2.0", "id": 2, "error": {"code": -1, "message": "x"}}
    request = {"jsonrpc": "2.0", "id": 1, "method": "sampling/createMessage"}
    msgs = [NOTE, request, other, REPLY]
    assert final_response(msgs, 1) == REPLY
    assert final_response(msgs, 2) == other
    assert final_response(msgs, 3) is None
