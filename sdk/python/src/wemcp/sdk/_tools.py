from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict


class McpTool(TypedDict):
    """An MCP server from the WeMcp catalog, by slug; called through the platform's gateway with
    your identity and keys."""

    type: Literal["mcp"]
    ref: str
    allowed_tools: NotRequired[list[str]]
    server_label: NotRequired[str]
    headers: NotRequired[dict[str, str]]


class McpServerTool(TypedDict):
    """Any MCP server by URL (OpenAI Responses style), called directly with ``headers``."""

    type: Literal["mcp"]
    server_url: str
    server_label: NotRequired[str]
    allowed_tools: NotRequired[list[str]]
    headers: NotRequired[dict[str, str]]
    require_approval: NotRequired[Literal["never"]]


def mcp(ref: str, *, allowed_tools: list[str] | None = None, server_label: str | None = None,
        headers: dict[str, str] | None = None) -> McpTool:
    tool: McpTool = {"type": "mcp", "ref": ref}
    if allowed_tools is not None:
        tool["allowed_tools"] = list(allowed_tools)
    if server_label:
        tool["server_label"] = server_label
    if headers:
        tool["headers"] = dict(headers)
    return tool


def mcp_server(server_url: str, *, server_label: str | None = None, allowed_tools: list[str] | None = None,
               headers: dict[str, str] | None = None) -> McpServerTool:
    tool: McpServerTool = {"type": "mcp", "server_url": server_url, "require_approval": "never"}
    if server_label:
        tool["server_label"] = server_label
    if allowed_tools is not None:
        tool["allowed_tools"] = list(allowed_tools)
    if headers:
        tool["headers"] = dict(headers)
    return tool


@dataclass(frozen=True)
class McpCall:
    """One MCP call the platform made while answering (the completion's ``mcp_calls`` field)."""

    round: int
    server: str
    ref: str | None
    tool: str
    arguments: Any
    status: str  # ok | error | invalid_arguments | not_allowed | timeout | unavailable
    latency_ms: float
    output: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> McpCall:
        return cls(int(d.get("round", 0)), str(d.get("server", "")), d.get("ref"), str(d.get("tool", "")),
                   d.get("arguments"), str(d.get("status", "")), float(d.get("latency_ms", 0.0)),
                   str(d.get("output", "")))


def mcp_calls(obj: Any) -> list[McpCall]:
    """The MCP calls reported on a completion, or on the last chunk of a stream."""
    extra = getattr(obj, "model_extra", None)
    raw = (extra or {}).get("mcp_calls") if extra is not None else (obj.get("mcp_calls") if isinstance(obj, dict)
                                                                     else None)
    return [McpCall.from_dict(c) for c in raw or []]
