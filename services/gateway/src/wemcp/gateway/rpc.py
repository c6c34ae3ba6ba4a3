"""JSON-RPC and raw-ASGI helpers of the MCP router: pure functions and small I/O helpers shared by
every transport adapter (no state, no runtime)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from wemcp.gateway.routes import MODERN
from wemcp.gateway.upstream import SERVER_INFO_META, modernize

JSON = b"application/json"
PROBLEM = b"application/problem+json"
# the 2025 revisions (and 2024-11-05): a client that says one of them in MCP-Protocol-Version has a session
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")


class Refused(Exception):
    """An HTTP-level refusal, rendered as problem+json."""

    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.headers = status, title, detail, headers or {}


# -- ASGI -------------------------------------------------------------------------------------------------
async def respond(send: Any, status: int, body: bytes, ctype: bytes = JSON,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    h = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    if headers:
        h.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": h})
    await send({"type": "http.response.body", "body": body})


async def respond_problem(send: Any, status: int, title: str, detail: str,
                          headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await respond(send, status, problem(status, title, detail), PROBLEM, headers)


async def refuse(send: Any, r: Refused) -> None:
    await respond(send, r.status, problem(r.status, r.title, r.detail), PROBLEM, hdrs(r.headers))


def problem(status: int, title: str, detail: str) -> bytes:
    return orjson.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})


def hdrs(d: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in d.items()]


def header(scope: dict[str, Any], name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return None


class HeadersView:
    """A read-only, case-insensitive view of an ASGI scope's headers (no copy per request)."""

    __slots__ = ("scope",)

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope

    def items(self) -> Iterator[tuple[str, str]]:
        for k, v in self.scope["headers"]:
            yield k.decode("latin-1"), v.decode("latin-1")

    def get(self, name: str, default: Any = None) -> Any:
        value = header(self.scope, name.lower().encode("latin-1"))
        return default if value is None else value


# -- JSON-RPC ---------------------------------------------------------------------------------------------
def params_of(msg: dict[str, Any]) -> dict[str, Any]:
    """A JSON-RPC message's params when they are an object, else a new empty dict."""
    params = msg.get("params")
    return params if isinstance(params, dict) else {}


def classify(msg: Any) -> str | None:
    """'request', 'notification', 'response' or None (not JSON-RPC 2.0)."""
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
        return None
    if isinstance(msg.get("method"), str):
        if "id" not in msg:
            return "notification"
        return "request" if isinstance(msg["id"], (str, int)) and not isinstance(msg["id"], bool) else None
    if "id" in msg and ("result" in msg or "error" in msg):
        return "response"
    return None


def tool_of(method: str, params: dict[str, Any]) -> str | None:
    """The tool a ``tools/call`` names (None for any other method, or a name that is not a string)."""
    name = params.get("name") if method == "tools/call" else None
    return name if isinstance(name, str) else None


def client_era(protocol_version: str | None) -> tuple[bool, bool]:
    """(modern, supported) for a request's ``MCP-Protocol-Version``: no header or a 2025 revision is a
    client with a session; anything else claims 2026-07-28, the only stateless revision served."""
    modern = protocol_version is not None and protocol_version not in HANDSHAKE_VERSIONS
    return modern, not modern or protocol_version == MODERN


def rpc_error(req_id: Any, code: int, message: str, data: Any = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return orjson.dumps({"jsonrpc": "2.0", "id": req_id, "error": err})


def rpc_result(req_id: Any, result: Any) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": req_id, "result": result})


def error_fields(e: dict[str, Any]) -> dict[str, Any]:
    """``rpc_error`` keyword arguments of a JSON-RPC error object."""
    return {"code": e["code"], "message": e["message"], "data": e.get("data")}


def result_for(req_id: Any, method: str, result: dict[str, Any], modern: bool) -> bytes:
    """A result the gateway answers itself (bundles, OpenAPI servers), with the fields a
    2026-07-28 client requires when it is one."""
    return rpc_result(req_id, modernize(method, result) if modern else result)


def empty_list(req_id: Any, method: str, modern: bool) -> bytes | None:
    """The empty answer to listing prompts, resources or templates of a server that has only tools
    (bundles, OpenAPI servers); None for any other method."""
    key = {"prompts/list": "prompts", "resources/list": "resources",
           "resources/templates/list": "resourceTemplates"}.get(method)
    return None if key is None else result_for(req_id, method, {key: []}, modern)


def discover_result(req_id: Any, info: dict[str, Any]) -> bytes:
    result: dict[str, Any] = {"supportedVersions": [MODERN], "capabilities": info["capabilities"],
                              "resultType": "complete", "cacheScope": "private", "ttlMs": 0,
                              "_meta": {SERVER_INFO_META: info["serverInfo"]}}
    if info.get("instructions"):
        result["instructions"] = info["instructions"]
    return rpc_result(req_id, result)


def host_allowed(host: str, allowed: list[str]) -> bool:
    """``host`` (a Host header or an origin's host[:port]) names one of ``allowed`` (host, or host:port)."""
    host = host.lower()
    name = host[:host.find("]") + 1] if host.startswith("[") else host.split(":", 1)[0]  # without the port
    return host in allowed or name in allowed
