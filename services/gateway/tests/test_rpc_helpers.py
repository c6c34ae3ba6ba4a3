"""Unit tests of the call path's pure helpers (rpc.py, forward.py, bundles.py): the JSON-RPC
envelope, the protocol era of a request, the answers the gateway writes itself."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from wemcp.common.bodylimit import BodyTooLarge as TooLarge
from wemcp.common.bodylimit import read_body
from wemcp.gateway import rpc
from wemcp.gateway.bundles import split_tool
from wemcp.gateway.context import CallContext
from wemcp.gateway.forward import outcome_of, translated
from wemcp.gateway.routes import Route
from wemcp.gateway.upstream import SERVER_INFO_META


@pytest.mark.parametrize("msg,params", [
    ({"params": {"a": 1}}, {"a": 1}),
    ({"params": [1, 2]}, {}),  # positional params are not an object
    ({"params": None}, {}),
    ({}, {}),
    ({"params": "x"}, {}),
])
def test_params_of(msg: dict, params: dict) -> None:
    assert rpc.params_of(msg) == params


def test_params_of_gives_the_object_itself_or_a_new_dict() -> None:
    p = {"name": "t"}
    assert rpc.params_of({"params": p}) is p
    a, b = rpc.params_of({}), rpc.params_of({})
    a["x"] = 1
    assert b == {}  # never a shared default


@pytest.mark.parametrize("msg,kind", [
    ({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, "request"),
    ({"jsonrpc": "2.0", "id": "a", "method": "tools/list"}, "request"),
    ({"jsonrpc": "2.0", "method": "notifications/initialized"}, "notification"),
    ({"jsonrpc": "2.0", "id": 1, "result": {}}, "response"),
    ({"jsonrpc": "2.0", "id": 1, "error": {"code": 1, "message": "x"}}, "response"),
    ({"jsonrpc": "2.0", "id": None, "method": "x"}, None),  # a request id is a string or a number
    ({"jsonrpc": "2.0", "id": True, "method": "x"}, None),  # not a boolean
    ({"jsonrpc": "2.0", "id": 1.5, "method": "x"}, None),
    ({"jsonrpc": "2.0", "id": 1}, None),  # neither a method nor a result
    ({"jsonrpc": "1.0", "id": 1, "method": "x"}, None),
    ({"id": 1, "method": "x"}, None),
    ({"jsonrpc": "2.0", "id": 1, "method": 7}, None),
    ([{"jsonrpc": "2.0", "id": 1, "method": "x"}], None),  # a batch
    ("x", None),
    (None, None),
])
def test_classify(msg: object, kind: str | None) -> None:
    assert rpc.classify(msg) == kind


@pytest.mark.parametrize("method,params,tool", [
    ("tools/call", {"name": "echo"}, "echo"),
    ("tools/call", {"name": 7}, None),
    ("tools/call", {}, None),
    ("prompts/get", {"name": "p"}, None),  # only a tools/call names a tool
])
def test_tool_of(method: str, params: dict, tool: str | None) -> None:
    assert rpc.tool_of(method, params) == tool


@pytest.mark.parametrize("header_value,modern,supported", [
    (None, False, True),  # no header: a 2025 client (it has a session)
    ("2024-11-05", False, True),
    ("2025-03-26", False, True),
    ("2025-06-18", False, True),
    ("2025-11-25", False, True),
    ("2026-07-28", True, True),
    ("2027-01-01", True, False),  # a later revision: refused with -32022
    ("garbage", True, False),
])
def test_client_era(header_value: str | None, modern: bool, supported: bool) -> None:
    assert rpc.client_era(header_value) == (modern, supported)


def test_rpc_error_and_result() -> None:
    assert orjson.loads(rpc.rpc_error(3, -32601, "nope")) == {"jsonrpc": "2.0", "id": 3,
                                                          "error": {"code": -32601, "message": "nope"}}
    assert orjson.loads(rpc.rpc_error(None, -32602, "x", {"missing": ["K"]}))["error"]["data"] == {"missing": ["K"]}
    assert "data" not in orjson.loads(rpc.rpc_error("a", 1, "m"))["error"]
    assert orjson.loads(rpc.rpc_result("a", {"x": 1})) == {"jsonrpc": "2.0", "id": "a", "result": {"x": 1}}
    assert rpc.error_fields({"code": 1, "message": "m", "other": 2}) == {"code": 1, "message": "m", "data": None}
    assert rpc.error_fields({"code": 1, "message": "m", "data": {"k": 1}})["data"] == {"k": 1}


def test_result_for_adds_what_a_2026_client_requires_only_to_it() -> None:
    legacy = orjson.loads(rpc.result_for(1, "tools/list", {"tools": []}, False))
    assert legacy["result"] == {"tools": []}
    modern = orjson.loads(rpc.result_for(1, "tools/list", {"tools": []}, True))["result"]
    assert modern["tools"] == [] and modern["resultType"] == "complete"
    assert "ttlMs" in modern and "cacheScope" in modern


@pytest.mark.parametrize("method,key", [
    ("prompts/list", "prompts"), ("resources/list", "resources"), ("resources/templates/list", "resourceTemplates"),
])
def test_empty_list(method: str, key: str) -> None:
    body = rpc.empty_list(9, method, False)
    assert body is not None and orjson.loads(body) == {"jsonrpc": "2.0", "id": 9, "result": {key: []}}
    assert rpc.empty_list(9, "tools/call", False) is None


def test_discover_result() -> None:
    info = {"capabilities": {"tools": {}}, "serverInfo": {"name": "s", "version": "1"}, "instructions": "hi"}
    r = orjson.loads(rpc.discover_result(1, info))["result"]
    assert r["supportedVersions"] == ["2026-07-28"] and r["_meta"][SERVER_INFO_META] == info["serverInfo"]
    assert r["instructions"] == "hi" and r["resultType"] == "complete"
    assert "instructions" not in orjson.loads(rpc.discover_result(1, {**info, "instructions": None}))["result"]


@pytest.mark.parametrize("host,allowed,ok", [
    ("localhost", ["localhost"], True),
    ("localhost:8080", ["localhost"], True),  # any port of an allowed name
    ("LOCALHOST:8080", ["localhost"], True),
    ("example.com:8080", ["example.com:443"], False),  # a host:port entry allows that port only
    ("example.com:443", ["example.com:443"], True),
    ("[::1]:8080", ["[::1]"], True),
    ("[::1]", ["[::1]"], True),
    ("evil.example", ["localhost"], False),
])
def test_host_allowed(host: str, allowed: list[str], ok: bool) -> None:
    assert rpc.host_allowed(host, allowed) is ok


def test_headers() -> None:
    scope = {"headers": [(b"x-wemcp-env-key", b"v1"), (b"mcp-session-id", b"s")]}
    assert rpc.header(scope, b"mcp-session-id") == "s"
    assert rpc.header(scope, b"absent") is None
    view = rpc.HeadersView(scope)
    assert view.get("X-WeMcp-Env-KEY") == "v1" and view.get("nope", "d") == "d"
    assert list(view.items()) == [("x-wemcp-env-key", "v1"), ("mcp-session-id", "s")]
    assert rpc.hdrs({"X-RateLimit-Limit": "5"}) == [(b"x-ratelimit-limit", b"5")]


def _receiver(*chunks: bytes, disconnect: bool = False):  # type: ignore[no-untyped-def]
    msgs = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    if disconnect:
        msgs = [*msgs[:-1], {"type": "http.disconnect"}]

    async def receive() -> dict:
        return msgs.pop(0)
    return receive


def test_read_body_joins_chunks_and_bounds_the_size() -> None:
    scope: dict = {"headers": []}
    assert asyncio.run(read_body(scope, _receiver(b"ab", b"cd", b"e"), 10, 1)) == b"abcde"
    with pytest.raises(TooLarge):
        asyncio.run(read_body(scope, _receiver(b"x" * 6, b"y" * 6), 10, 1))
    with pytest.raises(TooLarge):  # a declared length over the limit is refused before reading
        asyncio.run(read_body({"headers": [(b"content-length", b"11")]}, _receiver(b"x" * 11), 10, 1))


def test_outcome_of_a_whole_reply() -> None:
    assert outcome_of(b'{"jsonrpc":"2.0","id":1,"result":{}}') == ("ok", None)
    assert outcome_of(b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"x"}}') == ("error", -32602)
    assert outcome_of(b'{"error" not json') == ("error", None)


@pytest.mark.parametrize("modern,legacy,client_modern,expected", [
    (True, True, True, False),  # both eras upstream: never translated
    (True, True, False, False),
    (False, True, True, True),  # a 2025-only upstream, a 2026 client
    (False, True, False, False),
    (True, None, False, True),  # a 2026-only upstream, a 2025 client
    (True, None, True, False),
    (None, None, True, False),  # unknown: probed by the upstream layer, not translated here
    (None, None, False, False),
])
def test_translated(modern: bool | None, legacy: bool | None, client_modern: bool, expected: bool) -> None:
    ctx = CallContext({"headers": []}, "s", None, "anon", client_modern=client_modern)
    ctx.route = Route("s", kind="mcp", endpoint="http://x/mcp", modern=modern, legacy=legacy)
    assert translated(ctx) is expected


@pytest.mark.parametrize("name,member", [
    ("time__now", ("time", "now")),
    ("time__a__b", ("time", "a__b")),  # the first separator splits
    ("other__now", None),  # not a member
    ("time", None),
    ("", None),
])
def test_split_tool(name: str, member: tuple[str, str] | None) -> None:
    assert split_tool(name, ["time", "weather"]) == member
