"""Every agent as an MCP server at ``/mcp/agents/{id}``: one tool (named after the agent) that takes
a ``message`` and returns the agent's final answer (not streamed).

One low-level MCP server serves all agents; the handlers read the agent id from the HTTP request.
Stateless Streamable HTTP with JSON responses, so both protocol eras work (2026-07-28 without a
handshake, 2025 revisions with ``initialize``). Each ``tools/call`` is one agent call: it goes
through the same per-agent daily quota as ``/v1/agents/{id}/chat/completions``; a refusal is a
JSON-RPC error (code -32029) with the readable message.
"""

from __future__ import annotations

import re
import uuid
from contextlib import AsyncExitStack
from typing import Any

import mcp.types as types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from wemcp.agents import service
from wemcp.agents.models import Agent
from wemcp.common.errors import AppError, NotFound, Unauthorized
from wemcp.common.http import problem
from wemcp.common.identity import Identity, identity_of
from wemcp.common.logging import get_logger

log = get_logger("wemcp.agents.mcp_server")
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")
INPUT_SCHEMA = {"type": "object", "properties": {
    "message": {"type": "string", "description": "What to ask the agent"}}, "required": ["message"]}


def tool_name_for(agent: Agent) -> str:
    return (_UNSAFE.sub("_", agent.name).strip("_").lower() or "ask")[:64]


def _ctx_request(ctx: Any) -> Request:
    req = getattr(ctx, "request", None)
    if not isinstance(req, Request):
        raise MCPError(-32603, "no HTTP request in context")
    return req


async def _agent_and_caller(ctx: Any) -> tuple[service.AgentsState, Agent, Identity, Request]:
    req = _ctx_request(ctx)
    st: service.AgentsState = req.scope["wemcp.agents"]
    who = identity_of(req)
    if who is None:
        raise MCPError(-32001, "sign in first")
    agent_id = uuid.UUID(req.scope["path_params"]["agent_id"])
    try:
        agent = await service.get_agent(st, agent_id, who)
    except AppError as exc:
        raise MCPError(-32602, exc.detail) from None
    return st, agent, who, req


def build_server() -> Server[Any]:
    async def on_list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        _, agent, _, _ = await _agent_and_caller(ctx)
        return types.ListToolsResult(tools=[types.Tool(
            name=tool_name_for(agent), title=agent.name,
            description=(agent.description or f"Ask the agent {agent.name!r}; it answers with its final reply.")[:1024],
            input_schema=INPUT_SCHEMA)])

    async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        st, agent, who, req = await _agent_and_caller(ctx)
        if params.name != tool_name_for(agent):
            raise MCPError(-32602, f"unknown tool {params.name!r}; this agent's tool is {tool_name_for(agent)!r}")
        message = (params.arguments or {}).get("message")
        if not isinstance(message, str) or not message.strip():
            return types.CallToolResult(content=[types.TextContent(type="text", text="error: message (a non-empty "
                                                                   "string) is required")], is_error=True)
        try:
            p = service.prepare_agent(st, {"messages": [{"role": "user", "content": message}]}, who,
                                      req.headers.get("authorization"), agent)
            try:
                await service.admit_agent_call(st, who, agent)
            except AppError as exc:
                raise MCPError(-32029, exc.detail, {"reason": exc.extra.get("reason"),
                                                    "retry_after": exc.extra.get("retry_after"),
                                                    "reset_at": exc.extra.get("reset_at")}) from None
            result = await service.complete(st, p)
        except AppError as exc:
            return types.CallToolResult(content=[types.TextContent(type="text", text=f"error: {exc.detail}")],
                                        is_error=True)
        msg = result["choices"][0]["message"]
        return types.CallToolResult(content=[types.TextContent(type="text", text=msg.get("content") or "")],
                                    structured_content=None, is_error=False)

    return Server("wemcp-agent", version="0.1.0", on_list_tools=on_list_tools, on_call_tool=on_call_tool)


class AgentMcpEndpoint:
    """The ASGI endpoint behind ``/mcp/agents/{agent_id}``: checks the caller and that the agent exists
    (plain HTTP 401/404 problems), then hands the request to the MCP session manager."""

    def __init__(self) -> None:
        self.server = build_server()
        self.manager = StreamableHTTPSessionManager(
            app=self.server, json_response=True, stateless=True,
            # The gateway forwards its own Host; rebinding protection belongs to the public edge.
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        self._stack: AsyncExitStack | None = None

    async def start(self) -> None:
        self._stack = AsyncExitStack()
        await self._stack.enter_async_context(self.manager.run())

    async def stop(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            st: service.AgentsState = scope["app"].state.runtime.extras["agents"]
            who = identity_of(request)
            if who is None:
                raise Unauthorized("sign in first", headers={"WWW-Authenticate": "Bearer"})
            try:
                agent_id = uuid.UUID(scope["path_params"]["agent_id"])
            except ValueError:
                raise NotFound("no such agent") from None
            if request.method == "POST":
                await service.get_agent(st, agent_id, who)
        except AppError as exc:
            await problem(exc.status, exc.title, exc.detail, instance=scope.get("path"),
                          headers=exc.headers or None)(scope, receive, send)
            return
        scope["wemcp.agents"] = st
        await self.manager.handle_request(scope, receive, send)
